"""The conformance runner: a registry of spec checks, a target server, results and a table.

Each check is a function of a `Target`, registered with `@check(extension, section, quote)`:
the quote is the protocol.md sentence it verifies. A check fails with AssertionError, skips
with `Skip`, and is skipped automatically when the server does not advertise its extension
(core is always run). Only plain HTTP (httpx, and a raw socket for trailers) is used, so
any tus server can be checked.
"""

from __future__ import annotations

import socket
import ssl
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import httpx

TUS = {"Tus-Resumable": "1.0.0"}
OCTET = "application/offset+octet-stream"

# Display order of the summary table; also the order checks run in.
EXTENSIONS = (
    "core",
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "expiration",
    "checksum",
    "checksum-trailer",
    "termination",
    "concatenation",
    "concatenation-unfinished",
)


class Skip(Exception):
    """A check that cannot run against this server (e.g. no Tus-Max-Size to exceed)."""


@dataclass(frozen=True)
class Check:
    """One MUST/SHOULD of protocol.md."""

    name: str
    extension: str
    section: str
    quote: str
    func: Callable[[Target], None]
    level: str  # MUST or SHOULD: the strength of the server requirement checked


CHECKS: list[Check] = []


def check(
    extension: str, section: str, quote: str, level: str | None = None
) -> Callable[[Callable[[Target], None]], Callable[[Target], None]]:
    """Register a check of `extension`, citing protocol.md `section` and its `quote`.

    `level` defaults to MUST when the quote says MUST/SHALL, else SHOULD; pass it when the
    quote mixes a client MUST with the server SHOULD being checked.
    """
    if extension not in EXTENSIONS:
        raise ValueError(f"unknown extension {extension}")
    strength = level or ("MUST" if "MUST" in quote or "SHALL" in quote else "SHOULD")

    def register(func: Callable[[Target], None]) -> Callable[[Target], None]:
        CHECKS.append(Check(func.__name__, extension, section, quote, func, strength))
        return func

    return register


@dataclass
class Target:
    """The server under test: its creation URL, what it advertises, and request helpers."""

    url: str
    http: httpx.Client
    extensions: set[str] = field(default_factory=set)
    max_size: int | None = None
    algorithms: list[str] = field(default_factory=list)
    options: httpx.Response | None = None

    @classmethod
    def connect(cls, url: str, timeout: float = 30.0) -> Target:
        """Ask OPTIONS what the server supports (Feature detection, "Protocol Extensions")."""
        http = httpx.Client(timeout=timeout, follow_redirects=False)
        target = cls(url=url, http=http)
        response = http.options(url)
        target.options = response
        target.extensions = {
            e.strip() for e in response.headers.get("Tus-Extension", "").split(",") if e.strip()
        }
        if "Tus-Max-Size" in response.headers:
            target.max_size = int(response.headers["Tus-Max-Size"])
        target.algorithms = [
            a.strip()
            for a in response.headers.get("Tus-Checksum-Algorithm", "").split(",")
            if a.strip()
        ]
        return target

    def close(self) -> None:
        self.http.close()

    def absolute(self, location: str) -> str:
        """Location "MAY be absolute or relative"."""
        return urljoin(self.url, location)

    def post(self, headers: dict[str, str], content: bytes | None = None) -> httpx.Response:
        return self.http.post(self.url, headers={**TUS, **headers}, content=content)

    def create(self, length: int | None, headers: dict[str, str] | None = None) -> str:
        """A new upload (Creation); returns its absolute URL."""
        extra = (
            {"Upload-Length": str(length)} if length is not None else {"Upload-Defer-Length": "1"}
        )
        response = self.post({**extra, **(headers or {})})
        assert response.status_code == 201, (
            f"POST answered {response.status_code}: {response.text[:200]}"
        )
        assert "Location" in response.headers, "201 without Location"
        return self.absolute(response.headers["Location"])

    def head(self, location: str) -> httpx.Response:
        return self.http.head(location, headers=TUS)

    def patch(self, location: str, offset: int, data: bytes, **headers: str) -> httpx.Response:
        return self.http.patch(
            location,
            content=data,
            headers={**TUS, "Upload-Offset": str(offset), "Content-Type": OCTET, **headers},
        )

    def offset(self, location: str) -> int:
        response = self.head(location)
        assert response.status_code == 200, f"HEAD answered {response.status_code}"
        return int(response.headers["Upload-Offset"])

    def require(self, extension: str) -> None:
        """Skip unless the server advertises `extension` too."""
        if extension not in self.extensions:
            raise Skip(f"server does not advertise {extension}")

    def raw(self, request: bytes, read_timeout: float = 10.0) -> tuple[int, dict[str, str]]:
        """Send raw bytes on a fresh connection; return the response status and headers."""
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        sock: socket.socket = socket.create_connection(
            (parts.hostname or "", port), timeout=read_timeout
        )
        if parts.scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
        with sock:
            sock.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def host_header(self) -> str:
        return urlsplit(self.url).netloc


def poll(condition: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Wait for a server-side effect that may lag (e.g. a disconnect being noticed)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


@dataclass
class Result:
    check: Check
    outcome: str  # passed, failed, skipped
    detail: str = ""
    seconds: float = 0.0


def run_check(target: Target, item: Check) -> Result:
    """Run one check, turning assertion failures, skips and crashes into a Result."""
    started = time.monotonic()
    try:
        if item.extension != "core":
            target.require(item.extension)
        item.func(target)
    except Skip as exc:
        return Result(item, "skipped", str(exc), time.monotonic() - started)
    except AssertionError as exc:
        return Result(item, "failed", str(exc) or "assertion failed", time.monotonic() - started)
    except Exception as exc:  # a transport error or an unexpected answer shape is a failure
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return Result(item, "failed", detail, time.monotonic() - started)
    return Result(item, "passed", "", time.monotonic() - started)


def selected(only: Iterable[str] | None = None) -> list[Check]:
    """All registered checks (importing the check modules), in table order."""
    from conformance import checks  # noqa: F401  (registers the checks)

    wanted = set(only) if only else None
    ordered = sorted(CHECKS, key=lambda c: EXTENSIONS.index(c.extension))
    return [c for c in ordered if wanted is None or c.extension in wanted or c.name in wanted]


def run_suite(url: str, only: Iterable[str] | None = None, timeout: float = 30.0) -> list[Result]:
    """Run every check against the tus server whose creation URL is `url`."""
    target = Target.connect(url, timeout)
    try:
        return [run_check(target, item) for item in selected(only)]
    finally:
        target.close()


def summary(results: list[Result]) -> dict[str, dict[str, int]]:
    """passed/failed/skipped counts per extension (table order), plus a total row."""
    table: dict[str, dict[str, int]] = {}
    for ext in EXTENSIONS:
        rows = [r for r in results if r.check.extension == ext]
        if rows:
            table[ext] = {
                k: sum(r.outcome == k for r in rows) for k in ("passed", "failed", "skipped")
            }
    table["total"] = {
        k: sum(r.outcome == k for r in results) for k in ("passed", "failed", "skipped")
    }
    return table


def format_table(results: list[Result], markdown: bool = False) -> str:
    """The summary table, plain or as Markdown (for a README)."""
    table = summary(results)
    header = ("extension", "passed", "failed", "skipped")
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for ext, c in table.items():
            name = f"**{ext}**" if ext == "total" else ext
            lines.append(f"| {name} | {c['passed']} | {c['failed']} | {c['skipped']} |")
        return "\n".join(lines)
    width = max(len(e) for e in table) + 2
    lines = [f"{header[0]:<{width}}{header[1]:>8}{header[2]:>8}{header[3]:>9}"]
    lines.append("-" * len(lines[0]))
    for ext, c in table.items():
        if ext == "total":
            lines.append("-" * len(lines[0]))
        lines.append(f"{ext:<{width}}{c['passed']:>8}{c['failed']:>8}{c['skipped']:>9}")
    return "\n".join(lines)


def format_details(results: list[Result], verbose: bool = False) -> str:
    """One line per check (failures always, all of them when verbose)."""
    lines = []
    for r in results:
        if r.outcome == "failed" or verbose:
            mark = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP"}[r.outcome]
            lines.append(
                f"{mark} [{r.check.extension}] {r.check.name} ({r.check.level}, {r.check.section})"
            )
            if r.outcome != "passed":
                lines.append(f"     {r.detail}")
            if r.outcome == "failed":
                lines.append(f'     spec: "{r.check.quote}"')
    return "\n".join(lines)
