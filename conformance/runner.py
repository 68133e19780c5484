"""The conformance runner: a registry of spec checks, a target server, results and a table.

Each check is a function of a `Target`, registered with `@check(extension, section, quote)`:
the quote is the spec sentence it verifies. A check fails with AssertionError, skips with
`Skip`, and is skipped automatically when the server does not advertise its extension (core is
always run). A group that is not a tus extension has a gate instead (`GATES`): the
"ietf-draft" group (conformance/ietf_checks.py, the IETF resumable-upload draft) runs only for
the interop versions the server answers, found once per run. Its checks run once per interop
version and report each version's outcome (`Result.versions`). Only plain HTTP (httpx, and a
raw socket for trailers and 1xx responses) is used, so any tus server can be checked.

Every upload a check creates is recorded (any 201 answer to a POST, and every upload an IETF
creation announced), so the run can remove them afterwards (tus termination, IETF
cancellation) instead of leaving test data on the server under test.
"""

from __future__ import annotations

import socket
import ssl
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TextIO
from urllib.parse import urljoin, urlsplit

import httpx

TUS = {"Tus-Resumable": "1.0.0"}
OCTET = "application/offset+octet-stream"
INTEROP = "Upload-Draft-Interop-Version"

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
    "ietf-draft",
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

# Groups that are not announced in Tus-Extension: a gate says whether the group applies to
# this server (a line saying what will be checked) or raises Skip with the reason. Gates are
# called before every check of their group, so they cache what they find on the Target.
GATES: dict[str, Callable[[Target], str]] = {}


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
    created: list[str] = field(default_factory=list)  # absolute URLs, in creation order
    # The IETF draft group: the interop versions asked for (None: detect them), the versions
    # checked once known and how they were found, and the uploads IETF creations announced
    # (URL and the interop version to cancel them with).
    ietf_requested: tuple[int, ...] | None = None
    ietf_versions: list[int] | None = None
    ietf_detail: str = ""
    ietf_created: list[tuple[str, int]] = field(default_factory=list)
    # Per-version outcomes a check recorded while it ran (check name -> version -> outcome,
    # detail); run_check moves them into the Result.
    version_results: dict[str, dict[int, tuple[str, str]]] = field(default_factory=dict)

    @classmethod
    def connect(cls, url: str, timeout: float = 30.0) -> Target:
        """Ask OPTIONS what the server supports (Feature detection, "Protocol Extensions")."""
        http = httpx.Client(timeout=timeout, follow_redirects=False)
        target = cls(url=url, http=http)
        # A response hook sees every creation, whichever helper (or raw t.http call) made it.
        http.event_hooks = {"response": [target._record_creation]}
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

    def _record_creation(self, response: httpx.Response) -> None:
        location = response.headers.get("Location")
        if response.request.method == "POST" and response.status_code == 201 and location:
            self.created.append(self.absolute(location))

    def uploads_created(self) -> int:
        return len(set(self.created) | {url for url, _ in self.ietf_created})

    def cleanup(self) -> str:
        """Remove every upload the checks created; a one-line account of what was done.

        tus uploads are terminated (DELETE with Tus-Resumable), newest first, so a concatenated
        final goes before its partials; uploads of the IETF checks are cancelled with a DELETE
        carrying the interop version they were created with (the draft's cancellation, which
        needs no tus extension). Uploads a check already removed answer 404/410 and count as
        removed. Without the termination extension tus uploads cannot be removed, and the line
        says so.
        """
        tus_urls = list(dict.fromkeys(reversed(self.created)))
        ietf: dict[str, int] = {}
        for url, version in reversed(self.ietf_created):
            if url not in tus_urls:
                ietf.setdefault(url, version)
        total = len(tus_urls) + len(ietf)
        if not total:
            return "cleanup: no uploads were created"
        requests = [(url, {INTEROP: str(version)}) for url, version in ietf.items()]
        kept = 0
        if "termination" in self.extensions:
            requests = [(url, TUS) for url in tus_urls] + requests
        else:
            kept = len(tus_urls)
        left = []
        for url, headers in requests:
            try:
                status = self.http.delete(url, headers=headers).status_code
            except httpx.HTTPError:
                status = 0
            if status not in (200, 204, 404, 410):
                left.append(f"{url} ({status or 'no answer'})")
        self.created.clear()
        self.ietf_created.clear()
        if kept and not requests:
            return f"cleanup: {kept} uploads left on the server (no termination extension)"
        shown = ", ".join(left[:5]) + (" ..." if len(left) > 5 else "")
        removed = f"cleanup: {len(requests) - len(left)} of {total} uploads removed"
        if kept:
            return f"{removed}; {kept} left (no termination extension)" + (
                f"; not removed: {shown}" if left else ""
            )
        if left:
            return f"{removed}; left: {shown}"
        return f"cleanup: all {total} uploads created by the checks were removed"

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
    # ietf-draft checks: the outcome (passed, failed, skipped) and detail per interop version
    versions: dict[int, tuple[str, str]] = field(default_factory=dict)


def run_check(target: Target, item: Check) -> Result:
    """Run one check, turning assertion failures, skips and crashes into a Result."""
    started = time.monotonic()
    outcome, detail = "passed", ""
    try:
        gate = GATES.get(item.extension)
        if gate is not None:
            gate(target)
        elif item.extension != "core":
            target.require(item.extension)
        item.func(target)
    except Skip as exc:
        outcome, detail = "skipped", str(exc)
    except AssertionError as exc:
        outcome, detail = "failed", str(exc) or "assertion failed"
    except Exception as exc:  # a transport error or an unexpected answer shape is a failure
        outcome = "failed"
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    versions = target.version_results.pop(item.name, {})
    return Result(item, outcome, detail, time.monotonic() - started, versions)


def selected(only: Iterable[str] | None = None) -> list[Check]:
    """All registered checks (importing the check modules), in table order."""
    from conformance import checks, ietf_checks  # noqa: F401  (registers the checks)

    wanted = set(only) if only else None
    ordered = sorted(CHECKS, key=lambda c: EXTENSIONS.index(c.extension))
    return [c for c in ordered if wanted is None or c.extension in wanted or c.name in wanted]


def run_suite(
    url: str,
    only: Iterable[str] | None = None,
    timeout: float = 30.0,
    *,
    keep: bool = False,
    progress: TextIO | None = None,
    ietf_versions: Iterable[int] | None = None,
) -> list[Result]:
    """Run every check against the tus server whose creation URL is `url`.

    `progress` gets one line per check as it runs (the name before, the outcome after, flushed:
    a slow check is visible while it waits; ietf-draft checks add each version's outcome), a
    line per gated group saying what it will check, and the cleanup line. `ietf_versions`
    picks the interop versions of the IETF draft to check (default: those the server is found
    to answer). Created uploads are removed at the end unless `keep` (e.g. to inspect them).
    """
    target = Target.connect(url, timeout)
    if ietf_versions is not None:
        target.ietf_requested = tuple(sorted(set(ietf_versions)))
    items = selected(only)
    width = len(str(len(items)))
    results = []
    try:
        for group in dict.fromkeys(item.extension for item in items if item.extension in GATES):
            try:
                line = GATES[group](target)
            except Skip as exc:
                line = f"skipped: {exc}"
            except Exception as exc:  # its checks will fail with the error, one by one
                line = f"cannot tell what to check: {type(exc).__name__}: {exc}"
            if progress:
                progress.write(f"{group}: {line}\n")
                progress.flush()
        for number, item in enumerate(items, 1):
            if progress:
                progress.write(f"[{number:>{width}}/{len(items)}] {item.extension}::{item.name} ")
                progress.flush()
            result = run_check(target, item)
            results.append(result)
            if progress:
                marks = format_versions_inline(result)
                progress.write(
                    f"{result.outcome} ({result.seconds:.2f}s)"
                    + (f" {marks}" if marks else "")
                    + "\n"
                )
                progress.flush()
    finally:
        try:
            kept = f"cleanup: kept the {target.uploads_created()} uploads the checks created"
            line = kept if keep else target.cleanup()
            if progress:
                progress.write(line + "\n")
                progress.flush()
        finally:
            target.close()
    return results


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


VERSION_MARKS = {"passed": "ok", "failed": "FAIL", "skipped": "skip"}


def format_versions_inline(result: Result) -> str:
    """A check's per-version outcomes on one line: `[v3 ok, v4 ok, v5 FAIL]` ('' if none)."""
    if not result.versions:
        return ""
    marks = (f"v{n} {VERSION_MARKS[o]}" for n, (o, _) in sorted(result.versions.items()))
    return "[" + ", ".join(marks) + "]"


def format_details(results: list[Result], verbose: bool = False) -> str:
    """One line per check: failures and skips always (a skip hides untested behaviour, so it
    is named with its reason, not just counted), passes too when verbose. A check run per
    interop version (ietf-draft) adds its outcome for each version."""
    lines = []
    for r in results:
        if r.outcome != "passed" or verbose:
            mark = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP"}[r.outcome]
            lines.append(
                f"{mark} [{r.check.extension}] {r.check.name} ({r.check.level}, {r.check.section})"
            )
            if r.versions:
                lines.append(f"     versions: {format_versions_inline(r)[1:-1]}")
            if r.outcome != "passed":
                lines.append(f"     {r.detail}")
            if r.outcome == "failed":
                lines.append(f'     spec: "{r.check.quote}"')
    return "\n".join(lines)


def version_summary(results: list[Result]) -> dict[int, dict[str, int]]:
    """passed/failed/skipped counts of the per-version checks, per interop version."""
    table: dict[int, dict[str, int]] = {}
    for r in results:
        for number, (outcome, _) in r.versions.items():
            counts = table.setdefault(number, {"passed": 0, "failed": 0, "skipped": 0})
            counts[outcome] += 1
    return dict(sorted(table.items()))


def format_versions(results: list[Result], markdown: bool = False) -> str:
    """The ietf-draft outcomes per interop version ('' when no check ran per version)."""
    table = version_summary(results)
    if not table:
        return ""
    header = ("ietf-draft interop version", "passed", "failed", "skipped")
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for n, c in table.items():
            lines.append(f"| {n} | {c['passed']} | {c['failed']} | {c['skipped']} |")
        return "\n".join(lines)
    width = len(header[0]) + 2
    lines = [f"{header[0]:<{width}}{header[1]:>8}{header[2]:>8}{header[3]:>9}"]
    lines.append("-" * len(lines[0]))
    for n, c in table.items():
        lines.append(f"{'v' + str(n):<{width}}{c['passed']:>8}{c['failed']:>8}{c['skipped']:>9}")
    return "\n".join(lines)
