"""Shared fixtures: a real tusserver process (uvicorn) on a free loopback port.

Tests talk to it over HTTP exactly as clients do. `ServerProcess` can be restarted on the same
directory and port, or killed with SIGKILL, for resume and crash tests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser import SharedBrowser, running_browser
from pgserver import PostgresServer
from s3server import MotoServer
from s3server import running as s3_running

TUS = {"Tus-Resumable": "1.0.0"}
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A port nobody listens on right now (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Block until the server accepts connections (or fail with its log if it died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("server did not start listening")


def wait_for(
    condition: Callable[[], object], timeout: float = 30.0, what: str = "condition"
) -> object:
    """Poll a condition until it is truthy and return its value (no sleeping as sync)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def metric(server: ServerProcess, name: str) -> float:
    """One unlabelled value from the server's /metrics (0 when absent)."""
    for line in httpx.get(server.origin + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def wait_receiving(server: ServerProcess, uploads: int = 1) -> None:
    """Block until `uploads` PATCH bodies are being received (the request holds its upload):
    the only sure sign that a request is in flight, not merely sent."""
    wait_for(
        lambda: metric(server, "tusserver_active_uploads") == uploads,
        10,
        f"{uploads} PATCH bodies in flight",
    )


class ServerProcess:
    """`python -m tusserver` with the given flags, in its own upload directory."""

    def __init__(self, upload_dir: Path, *flags: str, port: int | None = None):
        self.upload_dir = upload_dir
        self.flags = list(flags)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = upload_dir.parent / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        """Creation URL (default base path unless --base-path was given)."""
        base = "/files/"
        if "--base-path" in self.flags:
            base = self.flags[self.flags.index("--base-path") + 1]
        return f"http://127.0.0.1:{self.port}{base}"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        """Start and wait until it listens."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        cmd = [
            sys.executable,
            "-m",
            "tusserver",
            "--port",
            str(self.port),
            "--upload-dir",
            str(self.upload_dir),
            *self.flags,
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        log.close()
        wait_listening(self.port, self.proc)
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as in a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait (graceful shutdown)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def restart(self) -> ServerProcess:
        """Stop (gracefully) and start again on the same port and directory."""
        self.stop()
        return self.start()

    def log(self) -> str:
        """Everything the server printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Factory for servers with custom flags; all are stopped at the end of the test."""
    started: list[ServerProcess] = []
    counter = iter(range(1000))

    def factory(*flags: str, upload_dir: Path | None = None) -> ServerProcess:
        directory = upload_dir or tmp_path / f"uploads{next(counter)}"
        server = ServerProcess(directory, *flags).start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop(5)


@pytest.fixture
def server(make_server: ServerFactory) -> ServerProcess:
    """A default server (expiration on, everything enabled) of this test's own: for tests that
    look into its upload dir or registry, read its log or absolute /metrics values, or stop,
    restart or kill it. Tests that only make requests on uploads they create themselves use
    `shared_server` instead (starting a server costs about half a second)."""
    return make_server()


@pytest.fixture(scope="session")
def _shared_server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The one default server behind `shared_server`, started on first use, stopped at the end
    of the session."""
    shared = ServerProcess(tmp_path_factory.mktemp("shared") / "uploads").start()
    yield shared
    shared.stop(5)


@pytest.fixture
def shared_server(_shared_server_process: ServerProcess) -> ServerProcess:
    """A default server (same flags as `server`) shared by the whole session. Its upload dir,
    registry, log and counters hold every other user's uploads too: use it only for requests
    on uploads the test creates itself, and never stop, restart or kill it. Should a test take
    it down anyway, it is started again (same directory and port) so the next test is not
    affected."""
    if _shared_server_process.proc is None or _shared_server_process.proc.poll() is not None:
        _shared_server_process.start()
    return _shared_server_process


@pytest.fixture(scope="session")
def _chromium() -> Iterator[SharedBrowser]:
    """The session's one headless Chromium (tests/browser.py), launched on first use."""
    with running_browser() as shared:
        yield shared


@pytest.fixture
def browser(_chromium: SharedBrowser) -> Iterator[Any]:
    """The session's Chromium for one test, which opens its own context on it
    (browser.open_page); asyncio tests around it are unaffected (SharedBrowser)."""
    with _chromium.in_use() as chromium:
        yield chromium


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The session's one PostgreSQL server (started on first use, stopped and removed at the
    end). Its directory is not under pytest's tmp dir, which the postgres user cannot enter."""
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="tusserver-pg-")), free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


_databases = iter(range(1_000_000))


@pytest.fixture
def pg_url(postgres: PostgresServer) -> Iterator[str]:
    """A fresh, empty database of this test's own on the session's PostgreSQL server."""
    name = f"t{os.getpid()}_{next(_databases)}"
    yield postgres.create_database(name)
    postgres.drop_database(name)


@pytest.fixture(scope="session")
def s3() -> Iterator[MotoServer]:
    """The session's one S3-compatible server (moto, started on first use)."""
    with s3_running(free_port()) as server:
        os.environ.update(server.env())  # the AWS credential chain of in-process stores
        yield server


_buckets = iter(range(1_000_000))


@pytest.fixture
def s3_bucket(s3: MotoServer) -> str:
    """A fresh, empty bucket of this test's own on the session's S3 server."""
    return s3.create_bucket(f"t{os.getpid()}-{next(_buckets)}")


def s3_settings(s3: MotoServer, bucket: str, **values: Any) -> dict[str, Any]:
    """Settings values for a server whose store is `bucket` on the session's S3 server."""
    return {
        "s3_bucket": bucket,
        "s3_endpoint": s3.endpoint,
        "s3_region": "us-east-1",
        "s3_force_path_style": True,
        **values,
    }


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB tmpfs for disk-full tests (mounting needs root, as CI runs), or a skip
    saying why it could not be mounted."""
    mount = tmp_path / "small-fs"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({result.stderr.strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def sse_events(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(event name, data) of each data line of a server-sent events stream."""
    kind = "message"
    for line in lines:
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            yield kind, line[6:]


class EventWatcher:
    """Reads an upload's /events stream (server-sent events) in a thread: every `status`
    document lands in `events`; `opened` is set once the stream answered, `ended` at its
    `end` event."""

    def __init__(self, location: str, timeout: float = 60.0):
        self.location = location
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self.opened = threading.Event()
        self.ended = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        assert self.opened.wait(10), "events stream did not open"

    def _read(self) -> None:
        with httpx.stream("GET", self.location + "/events", timeout=self.timeout) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            self.opened.set()
            for kind, data in sse_events(response.iter_lines()):
                if kind == "status":
                    self.events.append(json.loads(data))
                elif kind == "end":
                    self.ended.set()
                    return

    def wait_end(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Every status document, once the stream has ended."""
        assert self.ended.wait(timeout), "events stream did not end"
        self.thread.join(5)
        return self.events


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    """Plain HTTP client with no automatic redirects or retries."""
    with httpx.Client(timeout=30.0) as http:
        yield http


def create_upload(
    http: httpx.Client, url: str, length: int | None, headers: dict[str, str] | None = None
) -> str:
    """POST a new upload and return its absolute URL."""
    extra = {"Upload-Length": str(length)} if length is not None else {"Upload-Defer-Length": "1"}
    response = http.post(url, headers={**TUS, **extra, **(headers or {})})
    assert response.status_code == 201, response.text
    return response.headers["Location"]


def data_files(upload_dir: Path) -> list[str]:
    """Upload data files (named by id; the registry's files and dot-dirs have dots)."""
    return sorted(p.name for p in upload_dir.iterdir() if p.is_file() and "." not in p.name)


def offset_of(http: httpx.Client, location: str) -> int:
    """The upload's offset as HEAD reports it."""
    return int(http.head(location, headers=TUS).headers["Upload-Offset"])


def patch(
    http: httpx.Client,
    location: str,
    offset: int,
    data: bytes | Iterable[bytes],
    **headers: str,
) -> httpx.Response:
    """One PATCH with the tus chunk content type (`data` may be a generator: streamed)."""
    return http.patch(
        location,
        content=data,
        headers={
            **TUS,
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
            **headers,
        },
    )


@pytest.fixture
def mounted_app(tmp_path: Path) -> Iterator[int]:
    """tests/mounted_app.py (tusserver mounted at /api/tus in a host Starlette app) under stock
    uvicorn, not the `tusserver` command; yields its port."""
    port = free_port()
    env = {"MOUNT_TEST_DIR": str(tmp_path / "up"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "mounted_app:build", "--port", str(port)],
        cwd=ROOT / "tests",
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
