"""CSV processing benchmark (not a test): throughput and server memory at two file sizes.

    .venv/bin/python tests/bench/bench_csv.py [--sizes 100,1024] [--dir /tmp/csvbench]

For each size (MiB) it generates a CSV (6 columns, ~10% quoted fields with commas, some
non-ASCII text; ~55 bytes per record) and reports:
- baseline: `csv.reader` over the file opened as text (the usual Python approach),
- scanner:  the csv plugin's scanner alone, 4 MiB binary blocks,
- pipeline: validate + csv from one read (what a job does, plugins on two threads), in
            this process (its "per CPU second" figure counts both threads),
- server:   a real `tusserver --plugins validate,csv`: upload over HTTP (PATCH streamed from
            the file), wait for the job, processing MB/s from /status, and the server's peak
            RSS (VmHWM) - it must not grow with the file size.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import free_port, wait_listening  # noqa: E402

from tusserver.config import Settings  # noqa: E402
from tusserver.processing.csvscan import CsvScanner  # noqa: E402
from tusserver.processing.jobs import BUILTIN, Progress, run_pipeline  # noqa: E402
from tusserver.processing.plugin import Context  # noqa: E402
from tusserver.storage.file import FileStore  # noqa: E402

MiB = 1024 * 1024


def generate(path: Path, size: int) -> int:
    """Write about `size` bytes of CSV; returns the number of data records."""
    rnd = random.Random(7)
    words = ["alpha", "beta", "gamma", "delta", "épsilon", "zeta", "eta", "theta"]
    rows = []
    for i in range(40_000):
        comment = (
            f'"{rnd.choice(words)}, {rnd.choice(words)}"'
            if i % 10 == 0
            else f"{rnd.choice(words)} {rnd.choice(words)}"
        )
        rows.append(
            f"{{id}},{rnd.randint(-1000, 100000)},{rnd.random() * 1000:.3f},"
            f"2024-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d},"
            f"{rnd.choice(words)},{comment}\n"
        )
    template = "".join(rows)
    records = 0
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("id,amount,price,day,name,comment\n")
        written = 0
        block = 0
        while written < size:
            base = block * 40_000
            text = template.replace("{id}", "{}").format(*range(base, base + 40_000))
            f.write(text)
            written += len(text.encode())
            records += 40_000
            block += 1
    return records


def timed(
    label: str, size: int, records: int, fn: Callable[[Path], None], path: Path
) -> dict[str, float]:
    start, cpu = time.perf_counter(), time.process_time()
    fn(path)
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu  # less disturbed by other load on the machine
    row = {
        "seconds": round(seconds, 2),
        "MB/s": round(size / seconds / 1e6, 1),
        "records/s": round(records / seconds),
        "MB/s per CPU second": round(size / cpu_seconds / 1e6, 1),
    }
    print(f"  {label:9s} {row}", flush=True)
    return row


def baseline(path: Path) -> None:
    with open(path, encoding="utf-8", newline="") as f:
        for _ in csv.reader(f):
            pass


def scanner_only(path: Path) -> None:
    scanner = CsvScanner()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            scanner.feed(chunk)
    result = scanner.finish()
    assert result["errors_total"] == 0, result["errors"][:3]


def pipeline(path: Path) -> None:
    """The server's pipeline on the file, read through a file store as a job reads it."""
    settings = Settings()
    ctx = Context("bench", path.stat().st_size, {}, settings)
    plugins = {"validate": BUILTIN["validate"], "csv": BUILTIN["csv"]}
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / ctx.upload_id).symlink_to(path.resolve())
        store = FileStore(Path(directory))
        state, _, error = run_pipeline(store, ctx, plugins, Progress())
    assert state == "completed", error


def server_run(path: Path, workdir: Path) -> dict[str, float]:
    """Upload to a fresh server, wait for its job; processing rate and peak RSS."""
    port = free_port()
    upload_dir = workdir / f"uploads-{port}"
    log = open(workdir / f"server-{port}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "tusserver", "--port", str(port)),
            *("--upload-dir", str(upload_dir), "--plugins", "validate,csv"),
            *("--log-level", "warning"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        wait_listening(port, proc)
        size = path.stat().st_size
        url = f"http://127.0.0.1:{port}/files/"
        tus = {"Tus-Resumable": "1.0.0"}
        with httpx.Client(timeout=600) as client:
            created = client.post(url, headers={**tus, "Upload-Length": str(size)})
            location = created.headers["Location"]

            def body():  # type: ignore[no-untyped-def]
                with open(path, "rb") as f:
                    while chunk := f.read(MiB):
                        yield chunk

            start = time.perf_counter()
            response = client.patch(
                location,
                content=body(),
                headers={
                    **tus,
                    "Upload-Offset": "0",
                    "Content-Type": "application/offset+octet-stream",
                    "Content-Length": str(size),
                },
            )
            assert response.status_code == 204, response.text
            upload_s = time.perf_counter() - start
            while True:
                doc = client.get(location + "/status").json()
                if doc["status"] in ("completed", "failed"):
                    break
                time.sleep(0.2)
        job = doc["processing"]
        assert doc["status"] == "completed", job["error"]
        rss = _vmhwm(proc.pid)
        return {
            "upload MB/s": round(size / upload_s / 1e6, 1),
            "processing MB/s": round(job["bytes_per_second"] / 1e6, 1),
            "records": job["records"],
            "server peak RSS MiB": round(rss / MiB, 1),
        }
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def _vmhwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,1024", help="file sizes in MiB")
    parser.add_argument("--dir", default="/tmp/csvbench")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--server-only", action="store_true", help="only the server run")
    args = parser.parse_args()
    workdir = Path(args.dir)
    workdir.mkdir(parents=True, exist_ok=True)
    report = {}
    for mib in (int(s) for s in args.sizes.split(",")):
        path = workdir / f"bench-{mib}M.csv"
        records = generate(path, mib * MiB)
        size = path.stat().st_size
        print(f"{mib} MiB CSV: {size} bytes, {records} records", flush=True)
        entry: dict[str, object] = {}
        if not args.skip_baseline and not args.server_only:
            entry["baseline csv.reader"] = timed("baseline", size, records, baseline, path)
        if not args.server_only:
            entry["scanner"] = timed("scanner", size, records, scanner_only, path)
            entry["pipeline validate+csv"] = timed("pipeline", size, records, pipeline, path)
        entry["server"] = server_run(path, workdir)
        print(f"  server    {entry['server']}", flush=True)
        report[f"{mib}MiB"] = entry
        path.unlink()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"bench process peak RSS {peak:.0f} MiB (includes the in-process runs)")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
