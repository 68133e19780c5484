#!/usr/bin/env python3
"""Registry backends side by side: SQLite vs PostgreSQL on one instance, and two instances on
PostgreSQL behind no load balancer at all (the client spreads every upload's requests over
both, as a round-robin balancer without sticky sessions would).

Run on demand (not part of the test suite), from the project root with the project venv:

    .venv/bin/python tests/bench/bench_backends.py --repeat 3

Starts its own PostgreSQL (Debian's binaries, tests/pgserver.py: loopback, a temp dir, the
default durability settings unless --pg-fast) and a fresh database per run. Workloads: 2,000
small uploads (POST + PATCH + HEAD of 4 KiB, 32 concurrent) and one 1 GiB upload (one PATCH;
with two instances, 8 MiB PATCHes alternating between them). Figures: MB/s, uploads/s, CPU
seconds of the tusserver processes and of PostgreSQL, each per GiB or per 1,000 uploads,
and the ratio to SQLite of the same run. Goals: 1 GiB within 10% of SQLite; small uploads
at least 0.7x SQLite on one instance.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from bench import (  # noqa: E402 - after the path set-up above
    SCRATCH,
    GiB,
    MiB,
    curl_create,
    curl_patch,
    free_port,
    make_data,
    tree_stats,
    wait_port,
)
from pgserver import PostgresServer  # noqa: E402

SMALL = 4096
CONCURRENCY = 32


@dataclass
class Setup:
    name: str
    instances: int
    postgres: bool


SETUPS = {
    "sqlite": Setup("sqlite", 1, False),
    "postgres": Setup("postgres", 1, True),
    "postgres-x2": Setup("postgres-x2", 2, True),
}


@dataclass
class Result:
    seconds: float
    server_cpu: float
    db_cpu: float


class Cluster:
    """The tusserver instances of one run (sharing an upload dir and, maybe, a database)."""

    def __init__(self, setup: Setup, pg: PostgresServer | None, run: int):
        self.directory = SCRATCH / f"backends-{setup.name}"
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        flags = ["--log-level", "warning"]
        self.database = f"bench{run}"
        if setup.postgres:
            assert pg is not None
            flags += ["--db", pg.create_database(self.database)]
        self.ports = [free_port() for _ in range(setup.instances)]
        self.procs = [self._start(port, flags) for port in self.ports]

    def _start(self, port: int, flags: list[str]) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "tusserver", "--port", str(port)]
        cmd += ["--upload-dir", str(self.directory), *flags]
        proc = subprocess.Popen(
            cmd,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=open(SCRATCH / "backends.log", "ab"),  # noqa: SIM115
        )
        wait_port(port, proc)
        return proc

    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}/files/" for port in self.ports]

    def cpu(self) -> float:
        return sum(tree_stats(proc.pid)[0] for proc in self.procs)

    def stop(self, pg: PostgresServer | None) -> None:
        for proc in self.procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(self.directory, ignore_errors=True)
        if pg is not None:
            pg.drop_database(self.database)


async def small_uploads(urls: list[str], count: int) -> None:
    """POST, PATCH and HEAD of each upload go to the instances in turn."""
    import aiohttp

    body = os.urandom(SMALL)
    tus = {"Tus-Resumable": "1.0.0"}
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    turn = iter(range(10**9))

    def on(location: str) -> str:
        base = urls[next(turn) % len(urls)]
        return urllib.parse.urljoin(base, urllib.parse.urlsplit(location).path)

    async with aiohttp.ClientSession(connector=connector) as session:
        semaphore = asyncio.Semaphore(CONCURRENCY)

        async def one() -> None:
            async with semaphore:
                headers = {**tus, "Upload-Length": str(SMALL)}
                async with session.post(on(urls[0]), headers=headers) as r:
                    assert r.status == 201, r.status
                    location = r.headers["Location"]
                headers = {
                    **tus,
                    "Upload-Offset": "0",
                    "Content-Type": "application/offset+octet-stream",
                }
                async with session.patch(on(location), data=body, headers=headers) as r:
                    assert r.status == 204, r.status
                async with session.head(on(location), headers=tus) as r:
                    assert r.headers["Upload-Offset"] == str(SMALL), dict(r.headers)

        await asyncio.gather(*(one() for _ in range(count)))


def large_upload(urls: list[str], data: Path) -> None:
    """One PATCH on one instance; with several, 8 MiB PATCHes alternating between them."""
    size = data.stat().st_size
    location = curl_create(urls[0], size)
    if len(urls) == 1:
        curl_patch(location, data, 0, size, whole=True)
        return
    path = urllib.parse.urlsplit(location).path
    offset, turn = 0, 0
    while offset < size:
        n = min(8 * MiB, size - offset)
        target = urllib.parse.urljoin(urls[turn % len(urls)], path)
        curl_patch(target, data, offset, n, whole=False)
        offset, turn = offset + n, turn + 1


def run_once(
    setup: Setup, pg: PostgresServer | None, work: Callable[[list[str]], None], run: int
) -> Result:
    cluster = Cluster(setup, pg, run)
    try:
        time.sleep(0.3)  # let the servers finish importing before CPU is sampled
        cpu0, db0 = cluster.cpu(), pg_cpu(pg)
        started = time.perf_counter()
        work(cluster.urls())
        seconds = time.perf_counter() - started
        return Result(seconds, cluster.cpu() - cpu0, pg_cpu(pg) - db0)
    finally:
        cluster.stop(pg)
        subprocess.run(["sync"], check=False)


def pg_cpu(pg: PostgresServer | None) -> float:
    """CPU seconds of the whole PostgreSQL server (postmaster and every backend)."""
    if pg is None or pg.proc is None:
        return 0.0
    return tree_stats(pg.proc.pid)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setups", default="sqlite,postgres,postgres-x2")
    parser.add_argument("--workloads", default="small,large")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--small-count", type=int, default=2000)
    parser.add_argument("--pg-fast", action="store_true", help="fsync=off (as the tests run)")
    args = parser.parse_args()
    pg = PostgresServer(Path(tempfile.mkdtemp(prefix="tusbench-pg-")), free_port())
    pg.start(fast=args.pg_fast)
    try:
        report(args, pg)
    finally:
        pg.stop()
        shutil.rmtree(pg.directory, ignore_errors=True)


def report(args: argparse.Namespace, pg: PostgresServer) -> None:
    data = make_data("1g", GiB) if "large" in args.workloads else Path()
    works: dict[str, tuple[Callable[[list[str]], None], str]] = {
        "small": (lambda urls: asyncio.run(small_uploads(urls, args.small_count)), "uploads/s"),
        "large": (lambda urls: large_upload(urls, data), "MB/s"),
    }
    for workload in args.workloads.split(","):
        work, unit = works[workload]
        rates: dict[str, float] = {}
        for name in args.setups.split(","):
            setup = SETUPS[name]
            runs = [
                run_once(setup, pg if setup.postgres else None, work, i) for i in range(args.repeat)
            ]
            seconds = statistics.median(r.seconds for r in runs)
            per = args.small_count / 1000 if workload == "small" else 1.0  # per 1k uploads / GiB
            rate = args.small_count / seconds if workload == "small" else GiB / MiB / seconds
            rates[name] = rate
            ratio = rate / rates["sqlite"] if "sqlite" in rates else float("nan")
            print(
                f"{workload:6s} {name:12s} {rate:8.1f} {unit:9s} x{ratio:4.2f} vs sqlite"
                f"  server CPU {statistics.median(r.server_cpu for r in runs) / per:6.2f} s"
                f"  db CPU {statistics.median(r.db_cpu for r in runs) / per:6.2f} s"
                f" per {'1k uploads' if workload == 'small' else 'GiB'}"
                f"  (runs: {', '.join(f'{r.seconds:.2f}' for r in runs)} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
