#!/usr/bin/env python3
"""Side-by-side benchmark: tusserver vs @tus/server, tuspyserver and two ceilings, one run.

Run on demand (not part of the test suite), from the project root with the project venv:

    .venv/bin/python tests/bench/bench.py                 # everything, median of 3
    .venv/bin/python tests/bench/bench.py --workloads single,small --servers tusserver,tus-node

Peers are installed into scratch folders under /tmp/tusbench-peers (npm, pip venv), never into
the repository. Every (server, workload, repetition) gets a fresh server process and upload dir.
Clients: curl (a neutral C client) for large bodies, a lean aiohttp client for small uploads.
Figures: MB/s of wall time, server CPU seconds per GiB (utime+stime of the server process
tree), server peak RSS (max VmHWM over the tree) and uploads/s for small files.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PEERS = Path(os.environ.get("TUSBENCH_PEERS", "/tmp/tusbench-peers"))
SCRATCH = Path(os.environ.get("TUSBENCH_SCRATCH", "/tmp/tusbench"))
MiB = 1024 * 1024
GiB = 1024 * MiB

NODE_SERVER = """
import http from 'node:http';
import { Server } from '@tus/server';
import { FileStore } from '@tus/file-store';
const [port, dir] = process.argv.slice(2);
const tus = new Server({ path: '/files', datastore: new FileStore({ directory: dir }) });
http.createServer((req, res) => tus.handle(req, res)).listen(Number(port), '127.0.0.1');
"""

TUSPY_SERVER = """
import os, sys
from fastapi import FastAPI
from tuspyserver import create_tus_router
app = FastAPI()
app.include_router(create_tus_router(prefix="files", files_dir=os.environ["TUSPY_DIR"]))
"""


def npm_install(folder: Path, name: str, *packages: str) -> None:
    """npm packages into a scratch folder (never the repository), unless the last is there."""
    if not (folder / "node_modules" / packages[-1]).exists():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "package.json").write_text(f'{{"name": "{name}", "private": true}}\n')
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", *packages], cwd=folder, check=True
        )


def ensure_peers() -> None:
    """npm @tus/server + @tus/file-store and a venv with tuspyserver, in scratch folders."""
    node = PEERS / "node"
    npm_install(node, "tusbench-peer", "@tus/server", "@tus/file-store")
    (node / "server.mjs").write_text(NODE_SERVER)
    venv = PEERS / "pyvenv"
    if not (venv / "bin" / "uvicorn").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "pip"), "install", "-q"]
        subprocess.run([*pip, "tuspyserver", "uvicorn[standard]"], check=True)
    (venv / "tuspy_app.py").write_text(TUSPY_SERVER)


@dataclass
class ServerSpec:
    """How to start one server: command builder (port, dir) and its environment."""

    name: str
    command: Callable[[int, Path], list[str]]
    env: Callable[[Path], dict[str, str]] = field(default=lambda d: {})
    cwd: Path = ROOT


def tusserver_spec(name: str, *flags: str) -> ServerSpec:
    return ServerSpec(
        name,
        lambda port, d: [
            sys.executable,
            "-m",
            "tusserver",
            "--port",
            str(port),
            "--upload-dir",
            str(d),
            "--log-level",
            "warning",
            *flags,
        ],
    )


def uvicorn_args() -> list[str]:
    return ["--log-level", "warning", "--no-access-log"]


def baseline_spec() -> ServerSpec:
    """tusserver as committed at --baseline (default HEAD), exported to a scratch folder:
    the before/after comparison of a change."""
    spec = tusserver_spec("tusserver-HEAD")
    spec.env = lambda d: {"PYTHONPATH": str(SCRATCH / "head")}
    spec.cwd = SCRATCH
    return spec


def export_head(ref: str) -> None:
    target = SCRATCH / "head"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", ref, "tusserver"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)


SERVERS: dict[str, ServerSpec] = {
    "tusserver": tusserver_spec("tusserver"),
    "tusserver-HEAD": baseline_spec(),
    "tus-node": ServerSpec(
        "tus-node",
        lambda port, d: ["node", str(PEERS / "node" / "server.mjs"), str(port), str(d)],
        cwd=PEERS / "node",
    ),
    "tuspyserver": ServerSpec(
        "tuspyserver",
        lambda port, d: [
            str(PEERS / "pyvenv" / "bin" / "python"),
            "-m",
            "uvicorn",
            "tuspy_app:app",
            "--port",
            str(port),
            *uvicorn_args(),
        ],
        env=lambda d: {"TUSPY_DIR": str(d)},
        cwd=PEERS / "pyvenv",
    ),
    "asgi-sink": ServerSpec(
        "asgi-sink",
        lambda port, d: [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.bench.asgi_sink:app",
            "--port",
            str(port),
            *uvicorn_args(),
        ],
        env=lambda d: {"SINK_DIR": str(d)},
    ),
    # the same sink on uvicorn's other HTTP implementation / event loop (what they cost)
    "asgi-sink-h11": ServerSpec(
        "asgi-sink-h11",
        lambda port, d: [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.bench.asgi_sink:app",
            "--port",
            str(port),
            "--http",
            "h11",
            *uvicorn_args(),
        ],
        env=lambda d: {"SINK_DIR": str(d)},
    ),
    "asgi-sink-asyncio": ServerSpec(
        "asgi-sink-asyncio",
        lambda port, d: [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.bench.asgi_sink:app",
            "--port",
            str(port),
            "--loop",
            "asyncio",
            *uvicorn_args(),
        ],
        env=lambda d: {"SINK_DIR": str(d)},
    ),
    "raw-sink": ServerSpec(
        "raw-sink", lambda port, d: [sys.executable, str(HERE / "raw_sink.py"), str(port), str(d)]
    ),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not listen")


@contextlib.contextmanager
def server_process(
    command: list[str], cwd: Path, env: dict[str, str], log: Path, port: int
) -> Iterator[subprocess.Popen[bytes]]:
    """A server in a session of its own (stderr appended to `log`), yielded once it listens
    on `port`; afterwards its process group is terminated, killed if still there after 15 s."""
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "ab"),  # noqa: SIM115
    )
    try:
        wait_port(port, proc)
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def process_tree(pid: int) -> list[int]:
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return pids
    for child in children:
        pids += process_tree(int(child))
    return pids


def tree_stats(pid: int) -> tuple[float, float]:
    """(CPU seconds utime+stime, peak RSS MiB) of a process tree."""
    tick = os.sysconf("SC_CLK_TCK")
    cpu, hwm = 0.0, 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / tick
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    hwm = max(hwm, int(line.split()[1]))
        except OSError:
            pass
    return cpu, hwm / 1024


# -- clients -----------------------------------------------------------------------------------

TUS_H = ["-H", "Tus-Resumable: 1.0.0"]


def curl_create(url: str, length: int) -> str:
    out = subprocess.run(
        [
            *["curl", "-s", "-D", "-", "-o", "/dev/null", "-X", "POST", *TUS_H],
            *["-H", f"Upload-Length: {length}", "-H", "Upload-Metadata: filename ZGF0YS5iaW4="],
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"(?im)^location:\s*(\S+)", out)
    if not match:
        raise RuntimeError(f"create failed: {out[:300]}")
    return urllib.parse.urljoin(url, match.group(1))


def curl_patch(location: str, path: Path, offset: int, length: int, whole: bool) -> None:
    """One PATCH; curl streams the file (or a region of it through a pipe), never buffers."""
    cmd = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PATCH", *TUS_H]
    cmd += ["-H", f"Upload-Offset: {offset}", "-H", "Content-Type: application/offset+octet-stream"]
    cmd += ["-H", f"Content-Length: {length}", "-H", "Expect:", "-H", "Transfer-Encoding:"]
    if whole:
        code = subprocess.run([*cmd, "-T", str(path), location], capture_output=True, text=True)
    else:
        region = f"tail -c +{offset + 1} '{path}' | head -c {length}"
        feeder = subprocess.Popen(["sh", "-c", region], stdout=subprocess.PIPE)
        code = subprocess.run(
            [*cmd, "-T", "-", location], stdin=feeder.stdout, capture_output=True, text=True
        )
        assert feeder.stdout is not None
        feeder.stdout.close()
        feeder.wait()
    if code.stdout != "204":
        raise RuntimeError(f"PATCH at {offset} answered {code.stdout!r} {code.stderr[:200]}")


def upload_file(url: str, path: Path, chunk: int) -> str:
    """Create an upload for the file and PATCH it in `chunk` bytes; its location."""
    size = path.stat().st_size
    location = curl_create(url, size)
    offset = 0
    while offset < size:
        n = min(chunk, size - offset)
        curl_patch(location, path, offset, n, whole=(offset == 0 and n == size))
        offset += n
    return location


async def small_uploads(url: str, count: int, size: int, concurrency: int) -> None:
    import aiohttp

    body = os.urandom(size)
    tus = {"Tus-Resumable": "1.0.0"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        semaphore = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with semaphore:
                headers = {
                    **tus,
                    "Upload-Length": str(size),
                    "Upload-Metadata": "filename eC5jc3Y=",
                }
                async with session.post(url, headers=headers) as r:
                    assert r.status == 201, r.status
                    location = urllib.parse.urljoin(url, r.headers["Location"])
                headers = {
                    **tus,
                    "Upload-Offset": "0",
                    "Content-Type": "application/offset+octet-stream",
                }
                async with session.patch(location, data=body, headers=headers) as r:
                    assert r.status == 204, r.status
                async with session.head(location, headers=tus) as r:
                    assert r.headers["Upload-Offset"] == str(size), dict(r.headers)

        await asyncio.gather(*(one() for _ in range(count)))


# -- workloads ---------------------------------------------------------------------------------


@dataclass
class Workload:
    name: str
    description: str
    total_bytes: int
    uploads: int
    run: Callable[[str], object]


def make_workloads(data: dict[str, Path], args: argparse.Namespace) -> dict[str, Workload]:
    one_g, small64, three_g = data["1g"], data["64m"], data["3g"]
    parallel = 16

    def parallel_run(url: str) -> None:
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(lambda _: upload_file(url, small64, small64.stat().st_size), range(16)))

    n_small = args.small_count
    return {
        "single": Workload(
            "single", "1 GiB, one PATCH", GiB, 1, lambda u: upload_file(u, one_g, GiB)
        ),
        "chunked": Workload(
            "chunked", "1 GiB, 8 MiB PATCHes", GiB, 1, lambda u: upload_file(u, one_g, 8 * MiB)
        ),
        "parallel": Workload(
            "parallel", "16 x 64 MiB in parallel", 16 * 64 * MiB, parallel, parallel_run
        ),
        "small": Workload(
            "small",
            f"{n_small} x 4 KiB, 32 concurrent",
            n_small * 4096,
            n_small,
            lambda u: asyncio.run(small_uploads(u, n_small, 4096, 32)),
        ),
        "big": Workload(
            "big", "3 GiB, one PATCH", 3 * GiB, 1, lambda u: upload_file(u, three_g, 3 * GiB)
        ),
        "one64": Workload(
            "one64", "64 MiB, one PATCH", 64 * MiB, 1, lambda u: upload_file(u, small64, 64 * MiB)
        ),
    }


def make_data(kind: str, size: int, scratch: Path = SCRATCH) -> Path:
    """`size` bytes of random data (8 MiB blocks, each numbered) in scratch/data-{kind}.bin."""
    path = scratch / f"data-{kind}.bin"
    if not path.exists() or path.stat().st_size != size:
        scratch.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            block = os.urandom(8 * MiB)
            for i in range(size // len(block)):
                out.write(block[:16] + i.to_bytes(8, "big") + block[24:])
    return path


@dataclass
class Result:
    mbps: float
    cpu_per_gib: float
    rss: float
    uploads_per_s: float


def run_once(spec: ServerSpec, workload: Workload) -> Result:
    port = free_port()
    directory = SCRATCH / f"up-{spec.name}"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    env = {**os.environ, **spec.env(directory)}
    log = SCRATCH / f"{spec.name}.log"
    try:
        with server_process(spec.command(port, directory), spec.cwd, env, log, port) as proc:
            url = f"http://127.0.0.1:{port}/files/"
            time.sleep(0.3)  # let the server finish importing before CPU is sampled
            cpu0, _ = tree_stats(proc.pid)
            t0 = time.perf_counter()
            workload.run(url)
            elapsed = time.perf_counter() - t0
            cpu1, hwm = tree_stats(proc.pid)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        subprocess.run(["sync"], check=False)
    return Result(
        workload.total_bytes / MiB / elapsed,
        (cpu1 - cpu0) / (workload.total_bytes / GiB),
        hwm,
        workload.uploads / elapsed,
    )


def median(results: list[Result]) -> Result:
    return Result(
        statistics.median(r.mbps for r in results),
        statistics.median(r.cpu_per_gib for r in results),
        max(r.rss for r in results),
        statistics.median(r.uploads_per_s for r in results),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", default="tusserver,tus-node,tuspyserver,asgi-sink,raw-sink")
    parser.add_argument("--workloads", default="single,chunked,parallel,small,big,one64")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", default="HEAD", help="git ref run as tusserver-HEAD")
    parser.add_argument("--small-count", type=int, default=2000)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    servers = [SERVERS[name] for name in args.servers.split(",")]
    if any(s.name in ("tus-node", "tuspyserver") for s in servers):
        ensure_peers()
    if "tusserver-HEAD" in args.servers:
        export_head(args.baseline)
    wanted = args.workloads.split(",")
    data = {
        "1g": make_data("1g", GiB) if {"single", "chunked"} & set(wanted) else Path(),
        "64m": make_data("64m", 64 * MiB),
        "3g": make_data("3g", 3 * GiB) if "big" in wanted else Path(),
    }
    workloads = make_workloads(data, args)
    table: dict[str, dict[str, Result]] = {}
    for name in wanted:
        workload = workloads[name]
        table[name] = {}
        for spec in servers:
            runs = []
            for _ in range(args.repeat):
                try:
                    runs.append(run_once(spec, workload))
                except Exception as exc:  # a peer failing must not hide the others
                    print(f"  {spec.name} {name}: FAILED {exc}", flush=True)
            if not runs:
                continue
            result = table[name][spec.name] = median(runs)
            print(
                f"{name:9s} {spec.name:18s} {result.mbps:8.1f} MB/s {result.cpu_per_gib:6.2f}"
                f" CPU-s/GiB {result.rss:7.1f} MiB {result.uploads_per_s:8.1f} uploads/s"
                f"  (runs: {', '.join(f'{r.mbps:.0f}' for r in runs)} MB/s)",
                flush=True,
            )
    print_table(table, workloads)
    if args.json:
        raw = {w: {s: r.__dict__ for s, r in rows.items()} for w, rows in table.items()}
        args.json.write_text(json.dumps(raw, indent=2))


def print_table(table: dict[str, dict[str, Result]], workloads: dict[str, Workload]) -> None:
    print()
    print("| workload | server | MB/s | CPU-s/GiB | peak RSS MiB | uploads/s | vs tus-node |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, rows in table.items():
        base = rows.get("tus-node")
        for server, r in rows.items():
            key = "uploads_per_s" if name == "small" else "mbps"
            ratio = f"{getattr(r, key) / getattr(base, key):.2f}x" if base else "-"
            print(
                f"| {workloads[name].description} | {server} | {r.mbps:.0f} | "
                f"{r.cpu_per_gib:.2f} | {r.rss:.0f} | {r.uploads_per_s:.0f} | {ratio} |"
            )


if __name__ == "__main__":
    main()
