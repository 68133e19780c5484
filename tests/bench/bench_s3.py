#!/usr/bin/env python3
"""S3 store side by side: tusserver --s3-bucket vs @tus/server + @tus/s3-store, one local S3.

Run on demand (not part of the test suite), from the project root with the project venv:

    .venv/bin/python tests/bench/bench_s3.py                          # everything, median of 3
    .venv/bin/python tests/bench/bench_s3.py --workloads single,chunked --servers tusserver,tus-node
    .venv/bin/python tests/bench/bench_s3.py --s3 sink                 # the CPU-only view

Both servers write to the same S3-compatible server on loopback, started by this script:
moto's server mode from the project venv (as the tests use; restarted for every workload and
emptied after every run, since it keeps objects in memory) or, with `--s3 sink`, the mini S3 of
bench_s3_clients.py that discards part bodies (so the S3 side costs next to nothing and the
tus servers' own CPU shows). @tus/server + @tus/s3-store are installed with npm into
/tmp/tusbench-peers/s3 (never the repository); `tus-node` runs @tus/s3-store with its default
part size (8 MiB), `tus-node-50m` with tusserver's default 50 MiB. Every (workload, server,
repetition) gets a fresh server process and scratch dir, servers alternating; curl is the
client. Figures: MB/s of wall time, server CPU seconds per GiB (utime+stime of the server
process tree, /proc), peak RSS (max VmHWM over the tree). After every tusserver run the object
in the bucket must have the upload's size and no multipart upload may be left open.
Data under /tmp/tusbench-s3, deleted afterwards (--keep-data keeps it).

Workloads: `single` (1 GiB, one PATCH), `chunked` (1 GiB in 8 MiB PATCHes), `big` (3 GiB, one
PATCH) and `one64` (64 MiB, one PATCH): tusserver's peak RSS must be the same for `big` and
`one64`, and at most 100 MiB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from bench import (  # noqa: E402
    free_port,
    npm_install,
    server_process,
    tree_stats,
    upload_file,
)
from bench_s3_clients import GiB, MiB, Target, make_data  # noqa: E402
from s3server import ACCESS_KEY, REGION, SECRET_KEY  # noqa: E402

PEERS = Path(os.environ.get("TUSBENCH_PEERS", "/tmp/tusbench-peers"))
SCRATCH = Path(os.environ.get("TUSBENCH_S3_SCRATCH", "/tmp/tusbench-s3"))
NODE_DIR = PEERS / "s3"

NODE_SERVER = """
import http from 'node:http';
import { Server } from '@tus/server';
import { S3Store } from '@tus/s3-store';
const [port, endpoint, bucket, partSize] = process.argv.slice(2);
const options = {
  s3ClientConfig: {
    bucket, endpoint, region: process.env.AWS_DEFAULT_REGION, forcePathStyle: true,
    credentials: {
      accessKeyId: process.env.AWS_ACCESS_KEY_ID,
      secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY,
    },
  },
};
if (Number(partSize) > 0) options.partSize = Number(partSize);
const tus = new Server({ path: '/files', datastore: new S3Store(options) });
http.createServer((req, res) => tus.handle(req, res)).listen(Number(port), '127.0.0.1');
"""


def ensure_node_peer() -> None:
    """npm @tus/server + @tus/s3-store in a scratch folder."""
    npm_install(NODE_DIR, "tusbench-peer-s3", "@tus/server", "@tus/s3-store")
    (NODE_DIR / "server.mjs").write_text(NODE_SERVER)


def node_versions() -> str:
    import json

    out = []
    for name in ("server", "s3-store"):
        meta = NODE_DIR / "node_modules" / "@tus" / name / "package.json"
        if meta.exists():
            out.append(f"@tus/{name} {json.loads(meta.read_text())['version']}")
    sdk = NODE_DIR / "node_modules" / "@aws-sdk" / "client-s3" / "package.json"
    if sdk.exists():
        out.append(f"@aws-sdk/client-s3 {json.loads(sdk.read_text())['version']}")
    return ", ".join(out)


# -- the S3 server ------------------------------------------------------------------------------


class S3Target(Target):
    """moto (restarted per workload) or the sink of bench_s3_clients.py, on a free port; the
    buckets are made per run."""

    client_config = {"retries": {"max_attempts": 2}}

    def __init__(self, kind: str):
        super().__init__(kind, bucket=None)

    def new_bucket(self) -> str:
        name = f"bench-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=name)
        return name

    def cpu(self) -> float:
        return tree_stats(self.proc.pid)[0] if self.proc is not None else 0.0

    def empty(self, bucket: str) -> None:
        """Abort what is open and delete every object (moto keeps them all in memory)."""
        s3 = self.client()
        for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=item["Key"])


# -- the tus servers ----------------------------------------------------------------------------


@dataclass
class ServerSpec:
    name: str
    command: Callable[[int, str, str, Path], list[str]]  # (port, endpoint, bucket, scratch)
    env: Callable[[Path], dict[str, str]] = field(default=lambda d: {})
    cwd: Path = ROOT
    object_key: Callable[[str], str] = field(default=lambda upload_id: upload_id)


def tusserver_command(port: int, endpoint: str, bucket: str, scratch: Path) -> list[str]:
    return [
        str(ROOT / ".venv" / "bin" / "tusserver"),
        *["--s3-bucket", bucket, "--s3-endpoint", endpoint, "--s3-force-path-style"],
        *["--s3-region", REGION, "--upload-dir", str(scratch), "--port", str(port)],
        *["--log-level", "warning"],
    ]


def node_command(part_size: int) -> Callable[[int, str, str, Path], list[str]]:
    return lambda port, endpoint, bucket, scratch: [
        "node",
        str(NODE_DIR / "server.mjs"),
        str(port),
        endpoint,
        bucket,
        str(part_size),
    ]


SERVERS: dict[str, ServerSpec] = {
    "tusserver": ServerSpec("tusserver", tusserver_command),
    # @tus/s3-store stages parts in os.tmpdir(): point it at the run's scratch dir
    "tus-node": ServerSpec(
        "tus-node", node_command(0), env=lambda d: {"TMPDIR": str(d)}, cwd=NODE_DIR
    ),
    "tus-node-50m": ServerSpec(
        "tus-node-50m", node_command(50 * MiB), env=lambda d: {"TMPDIR": str(d)}, cwd=NODE_DIR
    ),
}


@dataclass
class Workload:
    name: str
    description: str
    data: str  # key of the data file
    chunk: int  # bytes per PATCH


WORKLOADS = {
    "single": Workload("single", "1 GiB, one PATCH", "1g", GiB),
    "chunked": Workload("chunked", "1 GiB, 8 MiB PATCHes", "1g", 8 * MiB),
    "big": Workload("big", "3 GiB, one PATCH", "3g", 3 * GiB),
    "one64": Workload("one64", "64 MiB, one PATCH", "64m", 64 * MiB),
}
DATA_SIZES = {"1g": GiB, "3g": 3 * GiB, "64m": 64 * MiB}


@dataclass
class Result:
    mbps: float
    cpu_per_gib: float
    rss: float
    s3_cpu_per_gib: float
    problems: list[str]


def check_bucket(target: S3Target, bucket: str, key: str, size: int) -> list[str]:
    """The finished object has the upload's size and no multipart upload is left open."""
    s3 = target.client()
    problems = []
    deadline = time.monotonic() + 30
    found = None
    while time.monotonic() < deadline:
        objects = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            objects.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
        found = objects.get(key)
        if found == size:
            break
        time.sleep(0.2)
    if found != size:
        problems.append(f"object {key!r} has {found} bytes, not {size} (bucket: {objects})")
    open_uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    if open_uploads:
        problems.append(f"{len(open_uploads)} multipart upload(s) left open")
    return problems


def run_once(spec: ServerSpec, workload: Workload, data: Path, target: S3Target) -> Result:
    bucket = target.new_bucket()
    port = free_port()
    scratch = SCRATCH / f"up-{spec.name}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        **spec.env(scratch),
    }
    command = spec.command(port, target.endpoint, bucket, scratch)
    log = SCRATCH / f"{spec.name}.log"
    size = data.stat().st_size
    try:
        with server_process(command, spec.cwd, env, log, port) as proc:
            url = f"http://127.0.0.1:{port}/files/"
            time.sleep(0.5)  # let the server finish importing before CPU is sampled
            cpu0, _ = tree_stats(proc.pid)
            s3_cpu0 = target.cpu()
            t0 = time.perf_counter()
            location = upload_file(url, data, workload.chunk)
            elapsed = time.perf_counter() - t0
            upload_id = urllib.parse.urlsplit(location).path.rstrip("/").rsplit("/", 1)[-1]
            problems = check_bucket(target, bucket, spec.object_key(upload_id), size)
            cpu1, hwm = tree_stats(proc.pid)
            s3_cpu = target.cpu() - s3_cpu0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            target.empty(bucket)
        except Exception as exc:  # the next workload restarts moto anyway
            print(f"  could not empty {bucket}: {exc}", flush=True)
    gib = size / GiB
    return Result(size / MiB / elapsed, (cpu1 - cpu0) / gib, hwm, s3_cpu / gib, problems)


def median(results: list[Result]) -> Result:
    return Result(
        statistics.median(r.mbps for r in results),
        statistics.median(r.cpu_per_gib for r in results),
        max(r.rss for r in results),
        statistics.median(r.s3_cpu_per_gib for r in results),
        [p for r in results for p in r.problems],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", default="tusserver,tus-node")
    parser.add_argument("--workloads", default="single,chunked,big,one64")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--s3", choices=("moto", "sink"), default="moto", help="the S3 server")
    parser.add_argument("--keep-data", action="store_true", help="keep the generated data")
    args = parser.parse_args()
    servers = [SERVERS[name] for name in args.servers.split(",")]
    if any(s.name.startswith("tus-node") for s in servers):
        ensure_node_peer()
        print(f"peer: {node_versions()}", flush=True)
    wanted = args.workloads.split(",")
    SCRATCH.mkdir(parents=True, exist_ok=True)
    data: dict[str, Path] = {}
    table: dict[str, dict[str, Result]] = {}
    try:
        for key in {WORKLOADS[w].data for w in wanted}:
            data[key] = make_data(DATA_SIZES[key])
        for name in wanted:
            workload = WORKLOADS[name]
            table[name] = run_workload(workload, servers, data[workload.data], args)
    finally:
        if not args.keep_data:
            for path in data.values():
                path.unlink(missing_ok=True)
    print_table(table, args.s3)


def run_workload(
    workload: Workload, servers: list[ServerSpec], data: Path, args: argparse.Namespace
) -> dict[str, Result]:
    target = S3Target(args.s3)  # a fresh S3 server per workload: moto's memory stays bounded
    target.start()
    runs: dict[str, list[Result]] = {s.name: [] for s in servers}
    try:
        for rep in range(args.repeat):
            for spec in servers if rep % 2 == 0 else servers[::-1]:  # alternate the servers
                try:
                    runs[spec.name].append(run_once(spec, workload, data, target))
                except Exception as exc:  # a server failing must not hide the others
                    print(f"  {workload.name} {spec.name}: FAILED {exc}", flush=True)
    finally:
        target.stop()
    rows = {}
    for spec in servers:
        name = spec.name
        if not runs[name]:
            continue
        r = rows[name] = median(runs[name])
        print(
            f"{workload.name:8s} {spec.name:13s} {r.mbps:7.1f} MB/s {r.cpu_per_gib:6.2f} CPU-s/GiB"
            f" {r.rss:6.1f} MiB   S3 server {r.s3_cpu_per_gib:5.1f} CPU-s/GiB"
            f"  (runs: {', '.join(f'{x.mbps:.0f} MB/s {x.cpu_per_gib:.2f}' for x in runs[name])})"
            + (f"  PROBLEMS: {r.problems}" if r.problems else ""),
            flush=True,
        )
    return rows


def print_table(table: dict[str, dict[str, Result]], s3: str) -> None:
    print()
    print(
        f"| workload ({s3}) | server | MB/s | server CPU-s/GiB | peak RSS MiB | CPU vs tus-node |"
        " checks |"
    )
    print("|---|---|---:|---:|---:|---:|---|")
    for name, rows in table.items():
        base = rows.get("tus-node")
        for server, r in rows.items():
            ratio = f"{r.cpu_per_gib / base.cpu_per_gib:.2f}x" if base else "-"
            checks = "ok" if not r.problems else "; ".join(sorted(set(r.problems)))[:200]
            print(
                f"| {WORKLOADS[name].description} | {server} | {r.mbps:.0f} | "
                f"{r.cpu_per_gib:.2f} | {r.rss:.0f} | {ratio} | {checks} |"
            )
    ours = {name: rows["tusserver"].rss for name, rows in table.items() if "tusserver" in rows}
    if "big" in ours and "one64" in ours:
        same = abs(ours["big"] - ours["one64"]) <= max(5.0, 0.05 * ours["one64"])
        also = f", 1 GiB {ours['single']:.0f} MiB" if "single" in ours else ""
        print(
            f"\ntusserver peak RSS: 64 MiB upload {ours['one64']:.0f} MiB, 3 GiB upload "
            f"{ours['big']:.0f} MiB{also}: {'the same' if same else 'NOT the same'} (within 5 MiB"
            f" or 5%), {'within' if ours['big'] <= 100 else 'OVER'} the 100 MiB goal"
        )


if __name__ == "__main__":
    main()
