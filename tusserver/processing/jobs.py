"""Durable processing jobs: queued -> processing -> completed | failed, in the registry.

Flow: the post-finish hook (an in-process, durable subscriber of the hooks dispatcher) queues a
job row for the finished upload. Every worker process runs `processing_workers` job loops; a
loop claims a queued job with a compare-and-set in SQLite (exactly one process wins), then
reads the file once in a worker thread and feeds every selected plugin from that pass. Progress
and a heartbeat go to the registry twice a second, so /status and /events work from any
process. A job whose owner died (SIGKILL, crash) is re-queued: at once if the owner was a
process on this host that no longer exists, else when its heartbeat is older than STALE.
A graceful shutdown re-queues its running jobs before exiting, so a restart picks them up.
Jobs restart from the beginning of the file (plugins keep no resumable state).

Problem rows that plugins report go to the registry's job_errors table in batches while the
job runs (RegistryErrorSink); a job ends with a `result`: ok, completed_with_errors (processed,
but some rows are malformed) or failed (the file could not be processed).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import logging
import os
import queue
import socket
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily

from tusserver.config import Settings
from tusserver.hooks import HTTPRequest
from tusserver.hooks.model import POST_PROCESS
from tusserver.processing.csvplugin import CsvPlugin
from tusserver.processing.plugin import (
    Context,
    ErrorSink,
    Plugin,
    PluginFailed,
    RowError,
    with_line,
)
from tusserver.processing.validate import ValidatePlugin
from tusserver.registry import GONE_STATES, Registry

if TYPE_CHECKING:
    from tusserver.core import TusCore

log = logging.getLogger("tusserver.processing")

READ_CHUNK = 4 * 1024 * 1024
PROGRESS_INTERVAL = 0.5
STALE = 15.0  # seconds without heartbeat before another worker takes a job over
RECOVERY_INTERVAL = 2.0
PRUNE_EVERY = 300  # recovery rounds between removals of jobs whose upload is gone
POLL_INTERVAL = 0.5
MAX_ATTEMPTS = 3  # runs that crashed the worker (or finished); graceful restarts are free
PIPELINE_KEY = "pipeline"
ERROR_BATCH = 1000  # problem rows per registry write (memory holds at most one batch)
PURGE_BATCH = 5000  # report rows deleted per transaction (older runs, uploads gone)

# The outcome of an ended job, on /status as `result` beside `status`.
RESULT_OK = "ok"
RESULT_WITH_ERRORS = "completed_with_errors"
RESULT_FAILED = "failed"

BUILTIN: dict[str, type[Plugin]] = {"validate": ValidatePlugin, "csv": CsvPlugin}
RUNNERS: weakref.WeakKeyDictionary[TusCore, JobRunner] = weakref.WeakKeyDictionary()

JOBS = Counter(
    "tusserver_processing_jobs",
    "Processing job transitions by this process (queued, started, completed, failed, requeued)",
    ["state"],
)
ACTIVE = Gauge(
    "tusserver_processing_jobs_running", "Processing jobs running now", multiprocess_mode="livesum"
)
BYTES = Counter("tusserver_processing_bytes", "Bytes read by processing jobs")


def load_plugins(settings: Settings) -> dict[str, type[Plugin]]:
    """Built-ins plus every Plugin subclass found in the --plugin-path modules."""
    available = dict(BUILTIN)
    for entry in settings.plugin_path:
        if entry.endswith(".py"):
            path = Path(entry)
            spec = importlib.util.spec_from_file_location(f"tusserver_plugin_{path.stem}", path)
            if spec is None or spec.loader is None:
                raise ValueError(f"cannot load processing plugin file {entry}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(entry)
        for value in vars(module).values():
            own = isinstance(value, type) and value.__module__ == module.__name__
            if own and issubclass(value, Plugin) and value.name:
                available[value.name] = value
    unknown = [name for name in settings.plugins if name not in available]
    if unknown:
        raise ValueError(f"unknown processing plugin(s) {unknown}; known: {sorted(available)}")
    return {name: available[name] for name in settings.plugins}


def select_plugins(settings: Settings, metadata: Mapping[str, str]) -> list[str]:
    """Plugins for one upload: the configured ones, narrowed by its `pipeline` metadata."""
    configured = list(settings.plugins)
    wanted = metadata.get(PIPELINE_KEY)
    if wanted is None:
        return configured
    names = {n.strip() for n in wanted.split(",") if n.strip()}
    return [n for n in configured if n in names]


@dataclass
class Progress:
    """Shared between the job thread (writer) and the heartbeat task (reader)."""

    bytes_done: int = 0
    cancelled: bool = False
    plugins: dict[str, Plugin] = field(default_factory=dict)
    errors: ErrorSink = field(default_factory=ErrorSink)

    def snapshot(self) -> tuple[int, dict[str, Any]]:
        counters: dict[str, Any] = {}
        for name, plugin in list(self.plugins.items()):
            with contextlib.suppress(Exception):
                counters[name] = plugin.progress()
        return self.bytes_done, counters


class Cancelled(Exception):
    """The job was stopped (shutdown); it is re-queued, not failed."""


class RegistryErrorSink(ErrorSink):
    """Problem rows of one job run, written to the registry in batches of ERROR_BATCH rows
    (and on every heartbeat), so memory holds one batch however many rows are bad, and every
    instance sharing the database can serve the report, also while the job still runs.

    Plugin threads call add(); a full batch is written by the thread that filled it (natural
    back-pressure: a file with millions of bad rows is scanned as fast as they are stored)."""

    def __init__(self, registry: Registry, job_id: str, owner: str, run: int):
        super().__init__()
        self.registry = registry
        self.job_id = job_id
        self.owner = owner
        self.run = run
        self._rows: list[RowError] = []

    def add(self, row: RowError) -> None:
        with self._lock:
            self.total += 1
            self._rows.append(row)
            full = len(self._rows) >= ERROR_BATCH
        if full:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            rows, self._rows = self._rows, []
        if rows:  # rows of a run this worker lost are dropped: the new owner starts over
            self.registry.add_job_errors(self.job_id, self.owner, self.run, rows)


def records_of(counters: Mapping[str, Any]) -> int:
    """The record count shown on /status: the largest any plugin reports."""
    return max((int(c.get("records", 0)) for c in counters.values() if c), default=0)


def run_pipeline(
    path: Path, ctx: Context, plugins: dict[str, type[Plugin]], progress: Progress
) -> tuple[str, dict[str, Any], str | None]:
    """Read the file once and feed every plugin (runs in a worker thread).

    Each plugin gets its own feeder thread behind a small bounded queue, so work that releases
    the GIL (file reads, SHA-256) overlaps with CSV scanning while memory stays at a few
    chunks per plugin. Returns (state, results, error). A plugin that fails stops being
    fed; the others go on.
    """
    results: dict[str, Any] = {}
    live: dict[str, Plugin] = {}
    ctx.cancelled = lambda: progress.cancelled
    for name, cls in plugins.items():
        plugin = cls()
        try:
            plugin.start(ctx)
            live[name] = plugin
        except Exception as exc:
            results[name] = _failure(exc)
    progress.plugins = dict(live)
    feeders = [_Feeder(name, plugin, results) for name, plugin in live.items()]
    try:
        with open(path, "rb") as f:
            with contextlib.suppress(OSError, AttributeError):
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            while any(feeder.alive for feeder in feeders):
                if progress.cancelled:
                    raise Cancelled
                chunk = f.read(READ_CHUNK)
                if not chunk:
                    break
                for feeder in feeders:
                    feeder.put(chunk)
                progress.bytes_done += len(chunk)
    finally:
        for feeder in feeders:
            feeder.close()
    if progress.cancelled:
        raise Cancelled
    for feeder in feeders:
        if not feeder.alive:
            continue
        try:
            result = feeder.plugin.finish()
            result.setdefault("status", "ok")
            results[feeder.name] = result
        except Exception as exc:
            results[feeder.name] = _failure(exc)
    ctx.errors.flush()
    ordered = {name: results[name] for name in plugins if name in results}
    failed = [
        f"{n}: {with_line(r.get('error', 'failed'), r.get('line'))}"
        for n, r in ordered.items()
        if _failed(r)
    ]
    return ("failed" if failed else "completed"), ordered, ("; ".join(failed) or None)


class _Feeder:
    """Feeds one plugin from its own thread through a bounded queue."""

    def __init__(self, name: str, plugin: Plugin, results: dict[str, Any]):
        self.name = name
        self.plugin = plugin
        self.results = results
        self.alive = True
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=1)
        self._thread: threading.Thread | None = None

    def put(self, chunk: bytes) -> None:
        if not self.alive:
            return
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"plugin-{self.name}", daemon=True
            )
            self._thread.start()
        self._queue.put(chunk)

    def close(self) -> None:
        """Wait until the plugin has seen every queued chunk."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self.alive:
                self._feed(chunk)

    def _feed(self, chunk: bytes) -> None:
        try:
            self.plugin.feed(chunk)
        except Exception as exc:
            self.results[self.name] = _failure(exc)
            self.alive = False


def _failed(result: Mapping[str, Any]) -> bool:
    return result.get("status") == "failed"


def _failure(exc: Exception) -> dict[str, Any]:
    """A plugin's failed result: the message, and the line as its own field (printed once)."""
    if isinstance(exc, PluginFailed):
        return {"status": "failed", "error": exc.message, "line": exc.line}
    # The job fails like any other failed job (WARNING); the traceback helps fix the plugin.
    log.warning("processing plugin crashed", exc_info=True)
    return {"status": "failed", "error": f"plugin error: {exc!r}"}


class JobRunner:
    """Per-process pool of job loops plus crash recovery; started with the core."""

    def __init__(self, core: TusCore, plugins: dict[str, type[Plugin]]):
        self.core = core
        self.settings = core.settings
        self.registry = core.registry
        self.plugins = plugins
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._running: dict[str, Progress] = {}
        self._limiter: anyio.CapacityLimiter | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the job loops and the recovery loop (needs a running event loop)."""
        if self._tasks or not self.plugins:
            return
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        workers = max(1, self.settings.processing_workers)
        self._limiter = anyio.CapacityLimiter(workers)
        self._tasks = [loop.create_task(self._recover_forever())]
        self._tasks += [loop.create_task(self._work_forever()) for _ in range(workers)]

    async def stop(self) -> None:
        """Stop the loops; running jobs are cancelled and handed back to the queue."""
        running = list(self._running)
        for progress in self._running.values():
            progress.cancelled = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for upload_id in running:
            if self.registry.requeue_job(upload_id, self.owner, refund=True):
                JOBS.labels("requeued").inc()
        self._running.clear()

    # -- queueing --------------------------------------------------------------------------

    async def on_post_finish(self, request: Any) -> None:
        """post-finish subscriber: queue the upload's job (durable: retried if this raises)."""
        upload_id = request.event.upload.id
        self.enqueue(upload_id)

    def enqueue(self, upload_id: str) -> bool:
        """Queue processing of a finished upload, once; True if a job was created."""
        info = self.registry.get(upload_id)
        # Concatenation: "The Server SHOULD NOT process these partial uploads until they are
        # concatenated" -- only the final upload is processed.
        if info is None or not info.finished or info.is_partial:
            return False
        selected = select_plugins(self.settings, info.metadata)
        if not selected:
            return False
        created = self.registry.create_job(upload_id, selected, info.length or 0)
        if created:
            JOBS.labels("queued").inc()
            if self._wake is not None:
                self._wake.set()
        return created

    # -- loops -----------------------------------------------------------------------------

    async def _work_forever(self) -> None:
        assert self._wake is not None
        while True:
            job_id = self._claim_next()
            if job_id is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    with anyio.fail_after(POLL_INTERVAL):
                        await self._wake.wait()
                continue
            try:
                await self._run(job_id)
            except Exception:
                log.exception("processing job %s crashed", job_id)

    def _claim_next(self) -> str | None:
        for job_id in self.registry.queued_jobs(limit=20):
            if self.registry.claim_job(job_id, self.owner):
                return job_id
        return None

    async def _recover_forever(self) -> None:
        rounds = 0
        while True:
            try:
                self.recover()
                if rounds % PRUNE_EVERY == 0:
                    self.registry.prune_jobs()
                # short transactions in a thread: the event loop never waits on the deletes
                while await anyio.to_thread.run_sync(self.registry.purge_job_errors, PURGE_BATCH):
                    pass
            except Exception:
                log.exception("processing recovery failed")
            rounds += 1
            await anyio.sleep(RECOVERY_INTERVAL)

    def recover(self) -> int:
        """Re-queue jobs whose owner is gone (dead local pid, or heartbeat older than STALE)."""
        now = time.time()
        host = socket.gethostname()
        requeued = 0
        for row in self.registry.processing_jobs():
            owner = row["owner"] or ""
            if owner == self.owner:
                continue
            parts = owner.split(":")
            dead = len(parts) >= 2 and parts[0] == host and not _pid_alive(parts[1])
            stale = (row["heartbeat"] or 0) < now - STALE
            if (dead or stale) and self.registry.requeue_job(row["id"], owner):
                log.warning("re-queued processing job %s (owner %s gone)", row["id"], owner)
                JOBS.labels("requeued").inc()
                requeued += 1
        if requeued and self._wake is not None:
            self._wake.set()
        return requeued

    # -- one job ---------------------------------------------------------------------------

    async def _run(self, job_id: str) -> None:
        job = self.registry.get_job(job_id)
        info = self.registry.get(job_id)
        if job is None:
            return
        progress = Progress()
        if info is None or not info.finished or info.state in GONE_STATES:
            self._finish(job_id, progress, "failed", {}, "upload is gone (terminated or expired)")
            return
        if job["attempts"] > MAX_ATTEMPTS:
            self._finish(
                job_id, progress, "failed", {}, f"gave up after {MAX_ATTEMPTS} interrupted runs"
            )
            return
        plugins = {n: self.plugins[n] for n in job["plugins"] if n in self.plugins}
        missing = [n for n in job["plugins"] if n not in self.plugins]
        if missing:
            self._finish(job_id, progress, "failed", {}, f"plugins not configured: {missing}")
            return
        sink = RegistryErrorSink(self.registry, job_id, self.owner, job["run"] or 0)
        progress.errors = sink
        ctx = Context(job_id, info.length or 0, dict(info.metadata), self.settings, errors=sink)
        path = self.core.store.path(job_id)
        self._running[job_id] = progress
        JOBS.labels("started").inc()
        ACTIVE.inc()
        log.info("processing %s with %s (attempt %d)", job_id, list(plugins), job["attempts"])
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._heartbeat, job_id, progress)
                try:
                    state, results, error = await anyio.to_thread.run_sync(
                        run_pipeline, path, ctx, plugins, progress, limiter=self._limiter
                    )
                except Cancelled:
                    tg.cancel_scope.cancel()
                    return
                except OSError as exc:
                    state, results, error = "failed", {}, f"cannot read upload: {exc}"
                tg.cancel_scope.cancel()
            self._finish(job_id, progress, state, results, error)
        finally:
            ACTIVE.dec()
            self._running.pop(job_id, None)

    async def _heartbeat(self, job_id: str, progress: Progress) -> None:
        while True:
            await anyio.sleep(PROGRESS_INTERVAL)
            done, counters = progress.snapshot()
            # the partial report lags by one heartbeat at most; the write (up to ERROR_BATCH
            # rows, maybe waiting for the plugin thread's) runs in a thread, off the event loop
            await anyio.to_thread.run_sync(progress.errors.flush)
            if not self.registry.job_progress(
                job_id, self.owner, done, records_of(counters), counters, progress.errors.total
            ):
                progress.cancelled = True  # someone else took the job over
                return

    def _finish(
        self,
        job_id: str,
        progress: Progress,
        state: str,
        results: dict[str, Any],
        error: str | None,
    ) -> None:
        done, counters = progress.snapshot()
        count = progress.errors.total
        result = {"status": state, "plugins": results, "error": error}
        if not self.registry.finish_job(
            job_id, self.owner, state, result, error, done, records_of(counters), count
        ):
            return
        JOBS.labels(state).inc()
        BYTES.inc(done)
        outcome = outcome_of(state, results, count)
        extra = {"upload": job_id, "result": outcome, "error_count": count}
        if outcome == RESULT_FAILED:
            log.warning(
                "processing %s failed: %s (%d malformed rows)", job_id, error, count, extra=extra
            )
        else:
            log.info("processing %s %s: %d malformed rows", job_id, outcome, count, extra=extra)
        self._emit_post_process(job_id)

    def _emit_post_process(self, job_id: str) -> None:
        """Push the job result to hook receivers as a `post-process` event."""
        hooks = self.core.hooks
        if not hooks.wants(POST_PROCESS):
            return
        info = self.registry.get(job_id)
        job = self.registry.get_job(job_id)
        if info is None or job is None:
            return
        request = hooks.request_for(POST_PROCESS, info, HTTPRequest())
        request.event.processing = job_summary(job)
        hooks.notify(POST_PROCESS, request)


def outcome_of(state: str, results: Mapping[str, Any], error_count: int) -> str | None:
    """ok / completed_with_errors / failed for an ended job; None while it is not ended."""
    if state == "failed":
        return RESULT_FAILED
    if state != "completed":
        return None
    with_errors = error_count or any(r.get("status") == "errors" for r in results.values())
    return RESULT_WITH_ERRORS if with_errors else RESULT_OK


def job_result(job: Mapping[str, Any]) -> str | None:
    """The outcome of a job row (see outcome_of)."""
    plugins = (job.get("result") or {}).get("plugins") or {}
    return outcome_of(job["state"], plugins, job.get("error_count") or 0)


def job_summary(job: Mapping[str, Any]) -> dict[str, Any]:
    """The job as shown to hooks and on /status when it has ended."""
    result = job.get("result") or {}
    plugins = result.get("plugins") or {}
    return {
        "status": job["state"],
        "result": job_result(job),
        "plugins": job.get("plugins"),
        "attempts": job.get("attempts"),
        "bytes_processed": job.get("bytes_done"),
        "records": job.get("records"),
        "error_count": job.get("error_count") or 0,
        "error": job.get("error"),
        "has_errors": any(r.get("status") in ("errors", "failed") for r in plugins.values()),
        "results": plugins,
    }


def _pid_alive(pid_text: str) -> bool:
    try:
        pid = int(pid_text)
    except ValueError:
        return True  # not ours to judge: rely on the heartbeat
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def attach(core: TusCore) -> JobRunner | None:
    """Wire processing into a core: post-finish subscription and background start/stop."""
    plugins = load_plugins(core.settings)
    if not plugins:
        return None
    runner = JobRunner(core, plugins)
    core.hooks.subscribe("post-finish", "processing", runner.on_post_finish, lease=30.0)
    core.services.append(runner)
    RUNNERS[core] = runner
    _STATE_GAUGE.registry = core.registry
    return runner


def runner_for(core: TusCore) -> JobRunner | None:
    """The job runner attached to `core`, if processing is configured."""
    return RUNNERS.get(core)


class _JobsInRegistry:
    """Scrape-time gauge of jobs per state, read from the shared registry (all processes)."""

    def __init__(self) -> None:
        self.registry: Registry | None = None

    def describe(self) -> list[GaugeMetricFamily]:
        return []

    def collect(self) -> list[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "tusserver_processing_jobs_in_state",
            "Processing jobs per state in the registry (all worker processes)",
            labels=["state"],
        )
        if self.registry is not None:
            counts = self.registry.job_counts()
            for state in ("queued", "processing", "completed", "failed"):
                family.add_metric([state], counts.get(state, 0))
        return [family]


_STATE_GAUGE = _JobsInRegistry()
REGISTRY.register(_STATE_GAUGE)
