"""Connection limits (tusserver.connections), over raw sockets against a real server: the head
timer (--read-header-timeout), the idle timer (--idle-timeout), the head size limit
(--max-header-size) and the connection cap (--max-connections) with the descriptor limit."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import resource
import select
import socket
import subprocess
import threading
import time
import urllib.parse

import httpx
import pytest
from conftest import TUS, create_upload, wait_for

from tusserver import connections
from tusserver.config import Settings

KiB = 1024
MiB = 1024 * KiB
OPTIONS = b"OPTIONS /files/ HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
CAP_LINE = "reached the cap"


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_to_close(sock: socket.socket, limit: float = 20.0) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took from this call."""
    sock.settimeout(limit)
    start = time.monotonic()
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"connection still open after {limit} s")
    return data, time.monotonic() - start


def still_open(sock: socket.socket, wait: float) -> bool:
    """The server neither answers nor closes within `wait` seconds (a paced wait, too)."""
    sock.settimeout(wait)
    try:
        return not sock.recv(1)
    except TimeoutError:
        return True
    except ConnectionResetError:
        return False


def dribble(sock: socket.socket, first: bytes, limit: float = 20.0) -> tuple[bytes, float]:
    """Send `first`, then one more head byte every 0.1 s until the server answers and closes:
    what it sent and how long after `first` it closed."""
    start = time.monotonic()
    sock.sendall(first)
    sock.settimeout(0.1)
    data = b""
    while time.monotonic() - start < limit:
        try:
            sock.sendall(b"x")
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - start


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:100]
    return int(response.split(b" ", 2)[1])


def exchange(sock: socket.socket, request: bytes) -> bytes:
    """One request on a keep-alive connection; the response head (bodies here are empty)."""
    sock.sendall(request)
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed instead of answering: {data!r}"
        data += chunk
    return data


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+)", status.read()).group(1))


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def options_latency(port: int) -> float:
    """Seconds for an OPTIONS request on a new connection, answer included."""
    start = time.monotonic()
    with connect(port) as sock:
        assert status_of(exchange(sock, OPTIONS + b"\r\n")) == 204
    return time.monotonic() - start


# -- timers -----------------------------------------------------------------------------------


def test_silent_connection_is_closed_at_read_header_timeout(make_server):
    """A new connection that sends nothing is closed after --read-header-timeout, without an
    answer (it asked nothing)."""
    server = make_server("--read-header-timeout", "1s", "--idle-timeout", "30s")
    with connect(server.port) as sock:
        data, took = read_to_close(sock)
    assert data == b""
    assert 0.9 <= took < 3


def test_dribbled_head_gets_408_at_the_deadline(make_server):
    """Bytes arriving do not extend the head timer: a client sending one byte every 0.1 s
    gets 408 and a close --read-header-timeout after the accept."""
    server = make_server("--read-header-timeout", "1s", "--idle-timeout", "30s")
    with connect(server.port) as sock:
        data, took = dribble(sock, b"OPTIONS /files/ HTTP/1.1\r\nX-Slow: ")
    assert status_of(data) == 408
    assert b"connection: close" in data.lower()
    assert 0.9 <= took < 3


def test_idle_and_head_timers_compose_on_keep_alive(make_server):
    """After a response the idle timer runs (--idle-timeout, closed without an answer); the
    first byte of the next request stops it and starts the head timer, which then runs its
    full --read-header-timeout. Requests spaced closer than both keep the connection."""
    server = make_server("--idle-timeout", "1.5s", "--read-header-timeout", "1s")
    request = OPTIONS + b"\r\n"
    with connect(server.port) as sock:
        for _ in range(2):  # 1.6 s in all: longer than either timer, never idle that long
            assert status_of(exchange(sock, request)) == 204
            assert still_open(sock, 0.8)
        assert status_of(exchange(sock, request)) == 204
        data, idle = read_to_close(sock)
    assert data == b""
    assert 1.4 <= idle < 3.5

    with connect(server.port) as sock:
        assert status_of(exchange(sock, request)) == 204
        assert still_open(sock, 0.8)
        data, took = dribble(sock, b"OPTIONS /files/ HTTP/1.1\r\nX-Slow: ")
    assert status_of(data) == 408
    # 0.8 s idle + a full second for the head: neither timer counted from the response cut it
    assert 0.9 <= took < 3


# -- head size --------------------------------------------------------------------------------


def test_head_size_limit(make_server):
    """Heads up to --max-header-size (64K by default) are served; a larger one gets 431 and
    the connection is closed, whether it comes in one piece, in small pieces or as a long
    request line."""
    server = make_server()
    with connect(server.port) as sock:
        pad = b"X-Pad: " + b"a" * (60 * KiB) + b"\r\n"
        assert status_of(exchange(sock, OPTIONS + pad + b"\r\n")) == 204
    for head in (
        OPTIONS + b"X-Pad: " + b"a" * (70 * KiB) + b"\r\n\r\n",
        b"GET /files/" + b"a" * (70 * KiB) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    ):
        with connect(server.port) as sock:
            sock.sendall(head)
            data, _ = read_to_close(sock)
        assert status_of(data) == 431
        assert b"connection: close" in data.lower()
    with connect(server.port) as sock:
        sock.sendall(OPTIONS + b"X-Pad: ")
        with contextlib.suppress(OSError):  # cut off once past the limit
            for _ in range(80):
                sock.sendall(b"a" * KiB)
        data, _ = read_to_close(sock)
    assert status_of(data) == 431


def test_header_flood_neither_stalls_others_nor_grows_memory(make_server):
    """While an attacker keeps opening connections that each stream 2.5 MiB of one header,
    a normal client makes 30 requests: every attack connection gets 431 and is cut once past
    the limit (64K), the normal requests stay fast and the server's RSS grows less than 4 MiB."""
    server = make_server()
    assert server.proc is not None
    pid = server.proc.pid
    baseline = sorted(options_latency(server.port) for _ in range(5))[2]
    rss_before = rss_kib(pid)
    answers: list[bytes] = []
    stop = threading.Event()

    def attack() -> None:
        piece = b"f" * (4 * KiB)
        while not stop.is_set():
            with connect(server.port) as sock:
                sock.sendall(OPTIONS + b"X-Flood: ")
                with contextlib.suppress(OSError):  # cut off: the answer is waiting
                    for _ in range(640):  # 2.5 MiB
                        sock.sendall(piece)
                answers.append(read_to_close(sock)[0][:12])

    attacker = threading.Thread(target=attack)
    attacker.start()
    try:
        latencies = sorted(options_latency(server.port) for _ in range(30))
    finally:
        stop.set()
        attacker.join()
    rss_after = rss_kib(pid)
    print(
        f"baseline {baseline * 1000:.1f} ms; during the flood ({len(answers)} attack"
        f" connections) median {latencies[15] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms;"
        f" RSS {rss_before} -> {rss_after} KiB"
    )
    assert len(answers) >= 2 and set(answers) == {b"HTTP/1.1 431"}
    assert latencies[-1] < 1.0
    assert rss_after - rss_before < 4 * 1024


def test_large_head_in_small_pieces_costs_linear_time(make_server):
    """With --max-header-size 4M, a 3 MiB header sent in 1 KiB pieces (each its own socket
    read) is served, and parsing it costs the server little CPU: pieces of an unfinished head
    are held and parsed once, where httptools would copy the growing value for every piece
    (0.76 s of CPU for this head when measured, 0.04 s held)."""
    server = make_server("--max-header-size", "4M")
    assert server.proc is not None
    pid = server.proc.pid
    rss_before, cpu_before = rss_kib(pid), cpu_seconds(pid)
    latencies = []
    with connect(server.port) as sock:
        sock.sendall(OPTIONS + b"X-Meta: ")
        piece = b"m" * KiB
        for i in range(3 * KiB):
            sock.sendall(piece)
            if i % 256 == 0:
                latencies.append(options_latency(server.port))
            time.sleep(0.0002)  # pacing: the server reads the pieces one by one
        assert status_of(exchange(sock, b"\r\n\r\n")) == 204
    cpu = cpu_seconds(pid) - cpu_before
    print(
        f"3 MiB head in 1 KiB pieces: server CPU {cpu:.2f} s, RSS {rss_before} ->"
        f" {rss_kib(pid)} KiB, other requests max {max(latencies) * 1000:.1f} ms"
    )
    assert cpu < 0.3
    assert max(latencies) < 1.0


# -- connection cap ---------------------------------------------------------------------------


def create_over_raw_socket(port: int) -> str:
    """POST a 1 MiB upload on a connection closed right after (so none lingers) -> path."""
    with connect(port) as sock:
        sock.sendall(
            b"POST /files/ HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
            b"Upload-Length: %d\r\nConnection: close\r\n\r\n" % MiB
        )
        data, _ = read_to_close(sock)
    assert status_of(data) == 201
    location = re.search(rb"(?i)\r\nlocation: ([^\r]+)", data).group(1).decode()
    return urllib.parse.urlparse(location).path


def test_cap_closes_longest_waiting_and_refuses_when_all_busy(make_server):
    """--max-connections 2: a newcomer closes the connection waiting longest for its head,
    never one with a request in progress; with both connections busy it gets 503 +
    Retry-After. One log line tells what was shed."""
    server = make_server("--max-connections", "2")
    paths = [create_over_raw_socket(server.port) for _ in "ab"]

    a, b = connect(server.port), connect(server.port)
    a.sendall(b"OPTIONS /files/ HTTP/1.1\r\n")
    b.sendall(f"PATCH {paths[0]} HTTP/1.1\r\n".encode())
    c = connect(server.port)
    assert status_of(exchange(c, OPTIONS + b"\r\n")) == 204
    assert read_to_close(a)[0] == b""  # the oldest, still in its head
    assert still_open(b, 0.2)

    headers = (
        "Host: x\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nExpect: 100-continue\r\n"
        f"Content-Type: application/offset+octet-stream\r\nContent-Length: {MiB}\r\n\r\n"
    )
    # 100 Continue: the app is reading the body, so both connections are busy
    assert b" 100 " in exchange(b, headers.encode())
    assert b" 100 " in exchange(c, f"PATCH {paths[1]} HTTP/1.1\r\n{headers}".encode())
    b.sendall(b"b" * (100 * KiB))
    c.sendall(b"c" * (100 * KiB))
    with connect(server.port) as d:  # no room
        data, _ = read_to_close(d)
    assert status_of(data) == 503
    assert b"retry-after: 1" in data.lower()
    b.sendall(b"b" * (MiB - 100 * KiB))
    assert status_of(exchange(b, b"")) == 204
    for sock in (a, b, c):
        sock.close()
    # One line per burst: normally both events are in it; a slow run may split them in two.
    wait_for(lambda: shed_counts(server.log()) == (1, 1), 15, "the cap log line")
    assert len(cap_lines(server.log())) <= 2


def cap_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if CAP_LINE in line]


def shed_counts(log: str) -> tuple[int, int]:
    """(closed, refused) summed over the cap log lines."""
    counts = [re.search(r"closed (\d+) .* refused (\d+) ", x) for x in cap_lines(log)]
    return sum(int(m[1]) for m in counts if m), sum(int(m[2]) for m in counts if m)


def accept_queue(port: int) -> int:
    """Connections the kernel holds for the server's listening socket, not accepted yet."""
    with open("/proc/net/tcp") as table:
        for line in table:
            fields = line.split()
            if fields[1] == f"0100007F:{port:04X}" and fields[3] == "0A":  # LISTEN
                return int(fields[4].partition(":")[2], 16)
    return 0


@pytest.fixture
def many_descriptors():
    """This test process needs more than 1,050 sockets open at once."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if want < 1300:
        pytest.skip(f"descriptor hard limit {hard} too low for this test")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def start_with_nofile(make_server, monkeypatch, soft: int, hard: int, *flags: str):
    """make_server(), the server process starting with the given descriptor limits."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    with monkeypatch.context() as patch:
        patch.setattr(subprocess, "Popen", functools.partial(subprocess.Popen, preexec_fn=limit))
        return make_server(*flags)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_slow_head_flood_at_the_descriptor_limit(make_server, monkeypatch, many_descriptors, loop):
    """A server started with 512 of 1024 descriptors raises its limit to 1024; 1,050
    connections that send half a request line and hold would exhaust it (asyncio then stops
    accepting for a second at a time, uvloop drops newcomers), but the cap (auto: 512) closes
    the oldest of them, so a normal client still creates an upload and reads it back, and the
    log says so in one line."""
    server = start_with_nofile(
        make_server, monkeypatch, 512, 1024, "--loop", loop, "--read-header-timeout", "60s"
    )
    assert server.proc is not None
    with open(f"/proc/{server.proc.pid}/limits") as limits:
        assert re.search(r"Max open files\s+1024\s+1024", limits.read())
    cap = connections.auto_max_connections(1024)
    slow = []
    started = time.monotonic()
    try:
        for i in range(1050):
            if i % 16 == 0 and accept_queue(server.port) > 24:
                # Bursts, yet never a full accept queue: a dropped SYN costs a second.
                wait_for(lambda: accept_queue(server.port) <= 8, 10, "the server to accept")
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"POST /files/ HTT")
            slow.append(sock)
        opened = time.monotonic() - started
        with httpx.Client(timeout=10) as http:
            start = time.monotonic()
            location = create_upload(http, server.url, 10)
            assert http.head(location, headers=TUS).headers["Upload-Offset"] == "0"
            served = time.monotonic() - start
        line = wait_for(lambda: cap_lines(server.log()), 10, "the log line")
        poller = select.poll()
        for sock in slow:
            poller.register(sock, select.POLLIN)
        readable = {fd for fd, _ in poller.poll(0)}
        closed = [sock.fileno() in readable and sock.recv(1) == b"" for sock in slow]
    finally:
        for sock in slow:
            sock.close()
    shed = sum(closed)
    print(f"{loop}: 1050 opened in {opened:.2f} s, {shed} shed, client served in {served:.3f} s")
    assert closed == [True] * shed + [False] * (1050 - shed), "not the oldest first"
    # the cap counts every connection (the client's two among them)
    assert 1050 - cap <= shed <= 1050 - cap + 4
    assert len(line) == 1 and f"cap of {cap} per worker" in line[0], line
    log = server.log()
    assert "out of system resource" not in log and "Traceback" not in log


# -- configuration ----------------------------------------------------------------------------


def test_limits_reach_worker_processes(make_server):
    """With --workers 2 the protocol in each worker applies the settings (they travel as
    JSON in the environment): an 8K head limit and a 1 s head timer."""
    server = make_server("--workers", "2", "--max-header-size", "8K", "--read-header-timeout", "1s")
    for _ in range(4):  # whichever worker accepts
        with connect(server.port) as sock:
            sock.sendall(OPTIONS + b"X-Pad: " + b"a" * (10 * KiB) + b"\r\n\r\n")
            assert status_of(read_to_close(sock)[0]) == 431
    with connect(server.port) as sock:
        data, took = read_to_close(sock)
    assert data == b"" and 0.9 <= took < 3


def test_auto_cap_and_uvicorn_options(monkeypatch):
    """The automatic cap leaves the process 64 descriptors, two per body in flight and three
    accept bursts; the options carry the loop, the idle timer (0 = never) and the backlog."""
    assert connections.auto_max_connections(1024) == 1024 - 64 - 2 * 128 - 3 * 64 == 512
    assert connections.auto_max_connections(65536) == 65536 - 64 - 2 * 8192 - 3 * 2048
    assert connections.auto_max_connections(1024, concurrent_uploads=100) == 568
    assert connections.auto_max_connections(100) == 16
    monkeypatch.setattr(connections, "_limits", None)
    monkeypatch.setattr(connections, "nofile_limit", lambda: 1024)
    options = connections.uvicorn_options(Settings(loop="asyncio", idle_timeout=0))
    assert options["loop"] == "asyncio"
    assert options["timeout_keep_alive"] >= 10**9
    assert options["backlog"] == 64
    assert connections.current().max_connections == 512
    monkeypatch.setattr(connections, "nofile_limit", lambda: 1 << 20)
    assert connections.uvicorn_options(Settings(max_connections=5000))["backlog"] == 2048
    assert connections.current().max_connections == 5000
