#!/usr/bin/env python3
"""IETF resumable-upload draft (interop 8) vs tus 1.0 on the same tusserver, one run.

Run on demand (not part of the test suite), from the project root with the project venv:

    .venv/bin/python tests/bench/bench_ietf.py                      # everything, median of 3
    .venv/bin/python tests/bench/bench_ietf.py --workloads tus,ietf-create --repeat 5
    .venv/bin/python tests/bench/bench_ietf.py --big-size 1G         # less disk for mem-big

Workloads (curl as the client, every run a fresh `tusserver --port P --upload-dir D` and a fresh
upload dir, the workloads interleaved: each repetition runs all of them, in reverse order on
odd repetitions; median of --repeat):

- `tus`          tus 1.0: POST (Upload-Length), then one PATCH of 1 GiB
                 (application/offset+octet-stream)
- `ietf-append`  draft interop 8: POST with Upload-Complete: ?0, Upload-Length and no body,
                 then one PATCH of 1 GiB (Upload-Complete: ?1, application/partial-upload)
- `ietf-create`  draft interop 8: one POST carrying the whole 1 GiB, Upload-Complete: ?1 (104
                 Upload Resumption Supported first, then progress 104s; curl skips 1xx)
- `mem-small`, `mem-big`  `ietf-create` of 64 MiB and of 3 GiB: the server's peak RSS must be
                 the same (memory must not grow with the upload's size)

curl streams the body from the file (`-T -` with the file as stdin and an explicit
Content-Length): `--data-binary @file` loads the whole file into curl's memory and curl 7.88
refuses it at 1 GiB ("out of memory"), and `-T file` appends the file name to `/files/`.
After every run the upload must be complete with the right size: HEAD (with the interop
header for draft uploads, Tus-Resumable for tus) gives Upload-Offset == size (and
Upload-Complete: ?1), and the file in the upload dir has that size (column `checks`).
Figures: MB/s of wall time (all requests of the upload, curl start-up included), server CPU
seconds per GiB (utime+stime from /proc/<pid>/stat, before/after), peak RSS (VmHWM), and the
104 interim responses curl received per upload. Data files under /tmp/tusbench-ietf, deleted
afterwards (--keep-data keeps them).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

from bench import GiB, MiB, free_port, make_data, server_process, tree_stats  # noqa: E402

SCRATCH = Path("/tmp/tusbench-ietf")
TUSSERVER = ROOT / ".venv" / "bin" / "tusserver"
INTEROP = "8"
TUS = {"Tus-Resumable": "1.0.0"}
DRAFT = {"Upload-Draft-Interop-Version": INTEROP}


# -- the client: curl ---------------------------------------------------------------------------


@dataclass
class Answer:
    code: int
    headers: dict[str, str]  # of the final response, names in lower case
    interim: list[int] = field(default_factory=list)  # 1xx status codes received before it


def curl(method: str, url: str, headers: dict[str, str], body: Path | None = None) -> Answer:
    """One request; the body (a whole file) is streamed from the file by curl, never loaded."""
    cmd = ["curl", "-sS", "-o", "/dev/null", "-D", "-", "-w", "%{http_code}", "-X", method]
    cmd += ["-H", "Expect:"]  # no 100-continue round trip (bench.py does the same)
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    if method == "HEAD":
        cmd[cmd.index("-X") : cmd.index("-X") + 2] = ["-I"]  # -X HEAD would wait for a body
        out = subprocess.run([*cmd, url], capture_output=True, check=False)
    elif body is None:
        cmd += ["-H", "Content-Length: 0", url]
        out = subprocess.run(cmd, capture_output=True, check=False)
    else:
        size = body.stat().st_size
        cmd += ["-H", f"Content-Length: {size}", "-H", "Transfer-Encoding:", "-T", "-", url]
        with open(body, "rb") as stdin:
            out = subprocess.run(cmd, stdin=stdin, capture_output=True, check=False)
    text = out.stdout.decode("latin-1")
    if out.returncode != 0:
        raise RuntimeError(f"curl {method} exited {out.returncode}: {out.stderr[:300]!r}")
    blocks, _, code = text.rpartition("\r\n\r\n")
    answer = Answer(int(code), {})
    for block in blocks.split("\r\n\r\n"):
        lines = block.strip("\r\n").split("\r\n")
        match = re.match(r"HTTP/\S+ (\d{3})", lines[0])
        if not match:
            continue
        status = int(match.group(1))
        if status < 200:
            answer.interim.append(status)
            continue
        answer.headers = {
            k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
        }
    return answer


def expect(answer: Answer, code: int, what: str) -> Answer:
    if answer.code != code:
        raise RuntimeError(f"{what} answered {answer.code} (wanted {code}): {answer.headers}")
    return answer


def location(answer: Answer, url: str) -> str:
    return urllib.parse.urljoin(url, answer.headers["location"])


def run_tus(url: str, data: Path) -> tuple[str, list[int]]:
    size = data.stat().st_size
    created = curl("POST", url, {**TUS, "Upload-Length": str(size), **meta()})
    where = location(expect(created, 201, "tus POST"), url)
    patch = {**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    expect(curl("PATCH", where, patch, data), 204, "tus PATCH")
    return where, created.interim


def run_ietf_append(url: str, data: Path) -> tuple[str, list[int]]:
    size = data.stat().st_size
    headers = {**DRAFT, "Upload-Complete": "?0", "Upload-Length": str(size), **ietf_type()}
    created = curl("POST", url, headers)
    where = location(expect(created, 201, "draft POST"), url)
    patch = {
        **DRAFT,
        "Upload-Offset": "0",
        "Upload-Complete": "?1",
        "Content-Type": "application/partial-upload",
    }
    appended = expect(curl("PATCH", where, patch, data), 204, "draft PATCH")
    return where, created.interim + appended.interim


def run_ietf_create(url: str, data: Path) -> tuple[str, list[int]]:
    created = curl("POST", url, {**DRAFT, "Upload-Complete": "?1", **ietf_type()}, data)
    return location(expect(created, 201, "draft POST with body"), url), created.interim


def meta() -> dict[str, str]:
    return {"Upload-Metadata": "filename ZGF0YS5iaW4="}  # data.bin, as bench.py sends


def ietf_type() -> dict[str, str]:
    """The draft's counterpart of the filename metadata above."""
    return {
        "Content-Type": "application/octet-stream",
        "Content-Disposition": 'attachment; filename="data.bin"',
    }


def check_upload(url: str, draft: bool, size: int, directory: Path) -> list[str]:
    """HEAD says complete at `size` and the file in the upload dir has `size` bytes."""
    problems = []
    head = curl("HEAD", url, DRAFT if draft else TUS)
    offset = head.headers.get("upload-offset")
    if head.code not in (200, 204) or offset != str(size):
        problems.append(f"HEAD {head.code} Upload-Offset {offset}, not {size}")
    if draft and head.headers.get("upload-complete") != "?1":
        problems.append(f"HEAD Upload-Complete {head.headers.get('upload-complete')}")
    if not draft and head.headers.get("upload-length") != str(size):
        problems.append(f"HEAD Upload-Length {head.headers.get('upload-length')}")
    upload_id = urllib.parse.urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
    stored = directory / upload_id
    on_disk = stored.stat().st_size if stored.exists() else None
    if on_disk != size:
        problems.append(f"file in the upload dir has {on_disk} bytes, not {size}")
    return problems


# -- workloads ----------------------------------------------------------------------------------


@dataclass
class Workload:
    name: str
    description: str
    data: str  # key of the data file: "main", "small" or "big"
    draft: bool
    run: Callable[[str, Path], tuple[str, list[int]]]


WORKLOADS = {
    "tus": Workload("tus", "tus 1.0: POST + one PATCH", "main", False, run_tus),
    "ietf-append": Workload(
        "ietf-append", "draft 8: POST ?0 + one PATCH ?1", "main", True, run_ietf_append
    ),
    "ietf-create": Workload(
        "ietf-create", "draft 8: one POST ?1 with the body", "main", True, run_ietf_create
    ),
    "mem-small": Workload(
        "mem-small", "ietf-create, small (memory)", "small", True, run_ietf_create
    ),
    "mem-big": Workload("mem-big", "ietf-create, big (memory)", "big", True, run_ietf_create),
}


@dataclass
class Result:
    mbps: float
    cpu_per_gib: float
    rss: float
    interim: int  # 104s per upload
    problems: list[str]


def run_once(workload: Workload, data: Path) -> Result:
    port = free_port()
    directory = SCRATCH / f"up-{workload.name}"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    command = [str(TUSSERVER), "--port", str(port), "--upload-dir", str(directory)]
    command += ["--log-level", "warning"]
    env, log = dict(os.environ), SCRATCH / "tusserver.log"
    size = data.stat().st_size
    try:
        with server_process(command, ROOT, env, log, port) as proc:
            url = f"http://127.0.0.1:{port}/files/"
            time.sleep(0.5)  # let the server finish starting before CPU is sampled
            cpu0, _ = tree_stats(proc.pid)
            t0 = time.perf_counter()
            where, interim = workload.run(url, data)
            elapsed = time.perf_counter() - t0
            cpu1, hwm = tree_stats(proc.pid)
            problems = check_upload(where, workload.draft, size, directory)
            if any(code != 104 for code in interim):
                problems.append(f"interim responses {sorted(set(interim))}")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        subprocess.run(["sync"], check=False)  # the next run does not pay for this one's writes
    return Result(size / MiB / elapsed, (cpu1 - cpu0) / (size / GiB), hwm, len(interim), problems)


def median(results: list[Result]) -> Result:
    return Result(
        statistics.median(r.mbps for r in results),
        statistics.median(r.cpu_per_gib for r in results),
        max(r.rss for r in results),
        round(statistics.median(r.interim for r in results)),
        [p for r in results for p in r.problems],
    )


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+)([KMG]?)", text.strip().upper())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 64M, 3G)")
    return int(match.group(1)) * {"": 1, "K": 1024, "M": MiB, "G": GiB}[match.group(2)]


def human(size: int) -> str:
    return f"{size / GiB:g} GiB" if size >= GiB else f"{size / MiB:g} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size", type=parse_size, default=GiB, help="tus/ietf-* (1G)")
    parser.add_argument("--small-size", type=parse_size, default=64 * MiB, help="mem-small")
    parser.add_argument("--big-size", type=parse_size, default=3 * GiB, help="mem-big (3G)")
    parser.add_argument("--keep-data", action="store_true", help="keep the generated data")
    args = parser.parse_args()
    wanted = args.workloads.split(",")
    unknown = set(wanted) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}; known: {', '.join(WORKLOADS)}")
    sizes = {"main": args.size, "small": args.small_size, "big": args.big_size}
    keys = sorted({WORKLOADS[w].data for w in wanted})
    SCRATCH.mkdir(parents=True, exist_ok=True)
    need = sum(sizes[k] for k in keys) + max(sizes[k] for k in keys) + 256 * MiB
    free = shutil.disk_usage(SCRATCH).free
    if free < need:
        sys.exit(f"{SCRATCH}: {human(free)} free, {human(need)} needed; try a smaller --big-size")
    curl_version = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout
    print(
        f"tusserver {TUSSERVER}, Python {platform.python_version()}, "
        f"{curl_version.split(' (')[0]}, {len(os.sched_getaffinity(0))} cores; "
        f"{args.repeat} runs per workload, interleaved",
        flush=True,
    )
    data: dict[str, Path] = {}
    runs: dict[str, list[Result]] = {w: [] for w in wanted}
    started = time.monotonic()
    try:
        for key in keys:
            data[key] = make_data(f"{key}-{sizes[key]}", sizes[key], SCRATCH)
        subprocess.run(["sync"], check=False)
        for rep in range(args.repeat):
            for name in wanted if rep % 2 == 0 else wanted[::-1]:
                workload = WORKLOADS[name]
                try:
                    result = run_once(workload, data[workload.data])
                except Exception as exc:  # one workload failing must not hide the others
                    print(f"  run {rep + 1} {name}: FAILED {exc}", flush=True)
                    continue
                runs[name].append(result)
                problems = f"  {result.problems}" if result.problems else ""
                print(
                    f"  run {rep + 1} {name:12s} {result.mbps:7.1f} MB/s "
                    f"{result.cpu_per_gib:5.2f} CPU-s/GiB {result.rss:6.1f} MiB "
                    f"{result.interim:3d} x 104{problems}",
                    flush=True,
                )
    finally:
        if not args.keep_data:
            for path in data.values():
                path.unlink(missing_ok=True)
    table = {name: median(results) for name, results in runs.items() if results}
    print_table(table, sizes)
    print(f"\nwall time {time.monotonic() - started:.0f} s", flush=True)


def print_table(table: dict[str, Result], sizes: dict[str, int]) -> None:
    print()
    print(
        "| workload | requests | size | MB/s | server CPU-s/GiB | peak RSS MiB | 104s | "
        "MB/s vs tus | CPU vs tus | checks |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    base = table.get("tus")
    for name, r in table.items():
        w = WORKLOADS[name]
        speed = cpu = "-"
        if base is not None and sizes[w.data] == sizes["main"]:  # same size: comparable
            speed = f"{r.mbps / base.mbps:.2f}x"
            cpu = f"{r.cpu_per_gib / base.cpu_per_gib:.2f}x"
        checks = "ok" if not r.problems else "; ".join(sorted(set(r.problems)))[:200]
        print(
            f"| {name} | {w.description} | {human(sizes[w.data])} | {r.mbps:.0f} | "
            f"{r.cpu_per_gib:.2f} | {r.rss:.0f} | {r.interim} | {speed} | {cpu} | {checks} |"
        )
    parts = []
    if base:
        for name in ("ietf-append", "ietf-create"):
            if name in table:
                r = table[name]
                parts.append(
                    f"{name} vs tus: {r.mbps / base.mbps:.2f}x MB/s, "
                    f"{r.cpu_per_gib / base.cpu_per_gib:.2f}x CPU/GiB, "
                    f"{round(r.rss - base.rss):+d} MiB peak RSS"
                )
    if "mem-small" in table and "mem-big" in table:
        small, big = table["mem-small"].rss, table["mem-big"].rss
        same = abs(big - small) <= max(5.0, 0.05 * small)
        parts.append(
            f"ietf-create peak RSS {human(sizes['small'])} {small:.0f} MiB vs "
            f"{human(sizes['big'])} {big:.0f} MiB: {'the same' if same else 'NOT the same'}"
            " (within 5 MiB or 5%)"
        )
    if parts:
        print("\n" + "; ".join(parts))


if __name__ == "__main__":
    main()
