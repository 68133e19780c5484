"""Durable processing jobs: queued -> processing -> completed | failed, in the registry.

Flow: the post-finish hook (an in-process, durable subscriber of the hooks dispatcher) queues a
job for the finished upload. Every worker process of every instance runs `processing_workers`
job loops; a loop claims the oldest queued job (the registry gives each job to exactly one
claimant), then reads the upload once through the store, in a worker thread, and feeds every
selected plugin from that pass. Progress goes to the registry twice a second, so /status and
/events work from any process of any instance, and each write extends the run's lease of
LEASE seconds (timed by the registry's clock).

Crash safety: a job whose owner is gone is re-queued by whichever process notices first: at
once if liveness says the owner is dead, else when its lease lapsed. Every claim is a new
`run`, the fencing token of the run's writes: a run that stalled past its lease and lost the
job finds its progress, report rows and result refused, stops its pipeline and writes nothing
more. A graceful shutdown re-queues its running jobs (without counting the run towards
MAX_ATTEMPTS), so a restart or another instance picks them up. Jobs restart from the beginning
of the upload (plugins keep no resumable state).

Problem rows that plugins report go to the registry in batches while the job runs
(RegistryErrorSink); a job ends with a `result`: ok, completed_with_errors (processed, but
some rows are malformed) or failed (the file could not be processed).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import logging
import queue
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from anyio.from_thread import BlockingPortal
from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily

from tusserver.config import Settings
from tusserver.errors import BackendUnavailable
from tusserver.hooks import HTTPRequest
from tusserver.hooks.model import POST_FINISH, POST_PROCESS
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
from tusserver.registry import GONE_STATES, Job, Registry, UploadInfo
from tusserver.registry.base import COMPLETED, JOB_FAILED, PROCESSING, QUEUED
from tusserver.storage import Store

if TYPE_CHECKING:
    from tusserver.core import TusCore

log = logging.getLogger("tusserver.processing")

READ_CHUNK = 4 * 1024 * 1024
PROGRESS_INTERVAL = 0.5
LEASE = 15.0  # seconds a run owns its job without a progress write; then others take over
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

# Why a run stopped before its end (Progress.stopped).
SHUTDOWN = "shutdown"  # this process stops: the job is re-queued, the run not counted
LOST = "lost"  # another run owns the job now (our lease lapsed): write nothing more
UNAVAILABLE = "unavailable"  # the registry could not take our writes: hand the job back

# How a run ended: (state, per-plugin results, error)
Ended = tuple[str, dict[str, Any], str | None]

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
    stopped: str | None = None  # SHUTDOWN, LOST or UNAVAILABLE once the run must stop
    plugins: dict[str, Plugin] = field(default_factory=dict)
    errors: ErrorSink = field(default_factory=ErrorSink)

    @property
    def cancelled(self) -> bool:
        return self.stopped is not None

    def stop(self, reason: str) -> None:
        """Ask the pipeline to stop (the first reason wins)."""
        if self.stopped is None:
            self.stopped = reason

    def snapshot(self) -> tuple[int, dict[str, Any]]:
        counters: dict[str, Any] = {}
        for name, plugin in list(self.plugins.items()):
            with contextlib.suppress(Exception):
                counters[name] = plugin.progress()
        return self.bytes_done, counters


class Cancelled(Exception):
    """The run was stopped (Progress.stopped says why); it did not end the job."""


class RegistryErrorSink(ErrorSink):
    """Problem rows of one job run, written to the registry in batches of ERROR_BATCH rows
    (and on every heartbeat), so memory holds one batch however many rows are bad, and every
    instance sharing the database can serve the report, also while the job still runs.

    Plugin threads call add(); a full batch is written by the thread that filled it (natural
    back-pressure: a file with millions of bad rows is scanned as fast as they are stored),
    through `portal` into the event loop that owns the registry. A refused write (the run
    lost the job) or an unreachable registry stops the run through `stop`; nothing more is
    written after that."""

    def __init__(
        self,
        registry: Registry,
        job_id: str,
        run: int,
        portal: BlockingPortal,
        stop: Callable[[str], None],
    ):
        super().__init__()
        self.registry = registry
        self.job_id = job_id
        self.run = run
        self._portal = portal
        self._stop = stop
        self._stopped = False
        self._rows: list[RowError] = []

    def add(self, row: RowError) -> None:
        with self._lock:
            self.total += 1
            self._rows.append(row)
            full = len(self._rows) >= ERROR_BATCH
        if full:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows (from any thread but the event loop's)."""
        with self._lock:
            rows, self._rows = self._rows, []
        if not rows or self._stopped:
            return
        try:
            if self._portal.call(self.registry.add_job_errors, self.job_id, self.run, rows):
                return
            reason = LOST
        except BackendUnavailable:
            reason = UNAVAILABLE
        self._stopped = True
        self._stop(reason)


def records_of(counters: Mapping[str, Any]) -> int:
    """The record count shown on /status: the largest any plugin reports."""
    return max((int(c.get("records", 0)) for c in counters.values() if c), default=0)


def run_pipeline(
    store: Store, ctx: Context, plugins: dict[str, type[Plugin]], progress: Progress
) -> Ended:
    """Read the upload once, through the store, and feed every plugin (in a worker thread).

    Each plugin gets its own feeder thread behind a small bounded queue, so work that releases
    the GIL (reads, SHA-256) overlaps with CSV scanning while memory stays at a few chunks per
    plugin. Returns (state, results, error). A plugin that fails stops being fed; the others
    go on.
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
        with store.reader(ctx.upload_id, chunk=READ_CHUNK) as reader:
            for chunk in reader:
                if progress.cancelled:
                    raise Cancelled
                if not any(feeder.alive for feeder in feeders):
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
    if progress.cancelled:  # the last report rows were refused
        raise Cancelled
    ordered = {name: results[name] for name in plugins if name in results}
    failed = [
        f"{n}: {with_line(r.get('error', 'failed'), r.get('line'))}"
        for n, r in ordered.items()
        if _failed(r)
    ]
    return (JOB_FAILED if failed else COMPLETED), ordered, ("; ".join(failed) or None)


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
        self.liveness = core.liveness
        self.plugins = plugins
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._running: dict[str, tuple[int, Progress]] = {}  # job id -> (run, progress)
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
        """Stop the loops; running jobs are cancelled and handed back to the queue, their
        runs not counted (a restart is no reason to give up on a file)."""
        running = [(job_id, run) for job_id, (run, _) in self._running.items()]
        for _, progress in self._running.values():
            progress.stop(SHUTDOWN)
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for job_id, run in running:
            with contextlib.suppress(BackendUnavailable):  # else its lease lapses
                if await self.registry.requeue_job(job_id, run, refund=True):
                    JOBS.labels("requeued").inc()
        self._running.clear()

    # -- queueing --------------------------------------------------------------------------

    async def on_post_finish(self, request: Any) -> None:
        """post-finish subscriber: queue the upload's job (durable: retried if this raises)."""
        await self.enqueue(request.event.upload.id)

    async def enqueue(self, upload_id: str) -> bool:
        """Queue processing of a finished upload, once; True if a job was created."""
        info = await self.registry.get(upload_id)
        # Concatenation: "The Server SHOULD NOT process these partial uploads until they are
        # concatenated" -- only the final upload is processed.
        if info is None or not info.finished or info.is_partial:
            return False
        selected = select_plugins(self.settings, info.metadata)
        if not selected:
            return False
        created = await self.registry.create_job(upload_id, selected, info.length or 0)
        if created:
            JOBS.labels(QUEUED).inc()
            if self._wake is not None:
                self._wake.set()
        return created

    async def restart(self, upload_id: str) -> Job | None:
        """Queue processing of a finished upload again (the admin's reprocess): its ended job
        is reset to queued, or a job is made if it has none. Returns the queued job, or None
        when its job is queued or running already. Raises ValueError, saying why, when the
        upload is not to be processed: gone, unfinished, partial, or no plugin selected.

        The caller holds the upload's lock when a termination must not come in between."""
        info = await self.registry.get(upload_id)
        if info is None or info.state in GONE_STATES:
            raise ValueError("upload is gone")
        if not info.finished:
            raise ValueError("upload is not finished")
        if info.is_partial:  # only the final upload of a concatenation is processed
            raise ValueError("partial uploads are not processed")
        selected = select_plugins(self.settings, info.metadata)
        if not selected:
            raise ValueError("processing is off")
        if not await self.registry.restart_job(upload_id, selected, info.length or 0):
            return None
        JOBS.labels(QUEUED).inc()
        if self._wake is not None:
            self._wake.set()
        return await self.registry.get_job(upload_id)

    # -- loops -----------------------------------------------------------------------------

    async def _work_forever(self) -> None:
        assert self._wake is not None
        unreachable = False  # an outage is logged once, not on every poll
        while True:
            try:
                job = await self.registry.claim_next_job(self.liveness.token, LEASE)
                unreachable = False
            except BackendUnavailable as exc:
                if not unreachable:
                    log.warning("cannot claim processing jobs: %s", exc)
                unreachable, job = True, None
            if job is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    with anyio.fail_after(POLL_INTERVAL):
                        await self._wake.wait()
                continue
            try:
                await self._run(job)
            except Exception:
                log.exception("processing job %s crashed", job.id)

    async def _recover_forever(self) -> None:
        """Re-queue orphaned jobs, forget those of gone uploads, purge old report rows and
        read the job counts; each step is idempotent, so every process of every instance
        runs it."""
        rounds = 0
        unreachable = False  # an outage is logged once, not every round
        while True:
            try:
                await self.recover()
                if rounds % PRUNE_EVERY == 0:
                    await self.registry.prune_jobs()
                while await self.registry.purge_job_errors(PURGE_BATCH):
                    pass
                JOB_COUNTS.counts = await self.registry.job_counts()
                unreachable = False
            except BackendUnavailable as exc:
                if not unreachable:
                    log.warning("processing recovery paused: %s", exc)
                unreachable = True
            except Exception:
                log.exception("processing recovery failed")
            rounds += 1
            await anyio.sleep(RECOVERY_INTERVAL)

    async def recover(self) -> int:
        """Re-queue jobs whose owner is dead (liveness) or whose lease lapsed (it stalled, or
        its liveness cannot be judged from here)."""
        dead = await self.liveness.dead(await self.registry.job_owners())
        requeued = await self.registry.requeue_lapsed_jobs(dead)
        for job_id in requeued:
            log.warning("re-queued processing job %s (its owner is gone or stalled)", job_id)
            JOBS.labels("requeued").inc()
        if requeued and self._wake is not None:
            self._wake.set()
        return len(requeued)

    # -- one job ---------------------------------------------------------------------------

    async def _run(self, job: Job) -> None:
        info = await self.registry.get(job.id)
        progress = Progress()
        refusal = self._refusal(job, info)
        if refusal is not None:
            await self._finish(job, progress, JOB_FAILED, {}, refusal)
            return
        assert info is not None  # else there is a refusal
        plugins = {name: self.plugins[name] for name in job.plugins}
        self._running[job.id] = (job.run, progress)
        JOBS.labels("started").inc()
        ACTIVE.inc()
        log.info("processing %s with %s (attempt %d)", job.id, list(plugins), job.attempts)
        try:
            async with BlockingPortal() as portal:
                sink = RegistryErrorSink(self.registry, job.id, job.run, portal, progress.stop)
                progress.errors = sink
                ctx = Context(
                    job.id, info.length or 0, dict(info.metadata), self.settings, errors=sink
                )
                ended = await self._pipeline(job, ctx, plugins, progress)
            if ended is not None:
                await self._finish(job, progress, *ended)
            elif progress.stopped != SHUTDOWN:
                await self._abandon(job, progress)
        finally:
            ACTIVE.dec()
            self._running.pop(job.id, None)

    def _refusal(self, job: Job, info: UploadInfo | None) -> str | None:
        """Why the job fails without running, if it does."""
        if info is None or not info.finished or info.state in GONE_STATES:
            return "upload is gone (terminated or expired)"
        if job.attempts > MAX_ATTEMPTS:
            return f"gave up after {MAX_ATTEMPTS} interrupted runs"
        missing = [name for name in job.plugins if name not in self.plugins]
        return f"plugins not configured: {missing}" if missing else None

    async def _pipeline(
        self, job: Job, ctx: Context, plugins: dict[str, type[Plugin]], progress: Progress
    ) -> Ended | None:
        """The pipeline beside its heartbeat: (state, results, error), or None if stopped."""
        ended: Ended | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._heartbeat, job, progress)
            try:
                ended = await anyio.to_thread.run_sync(
                    run_pipeline, self.core.store, ctx, plugins, progress, limiter=self._limiter
                )
            except Cancelled:
                pass
            except BackendUnavailable as exc:  # the store's service
                log.warning("processing %s: cannot read the upload now: %s", job.id, exc)
                progress.stop(UNAVAILABLE)
            except OSError as exc:
                ended = JOB_FAILED, {}, f"cannot read upload: {exc}"
            finally:
                tg.cancel_scope.cancel()
        return ended

    async def _heartbeat(self, job: Job, progress: Progress) -> None:
        """Flush report rows and write progress (extending the lease) every PROGRESS_INTERVAL;
        a refused write means another run owns the job: stop ours."""
        unreachable = False
        while not progress.cancelled:
            await anyio.sleep(PROGRESS_INTERVAL)
            # the partial report lags by one heartbeat at most; the write (up to ERROR_BATCH
            # rows, maybe waiting for the plugin thread's) runs in a thread, off the event loop
            await anyio.to_thread.run_sync(progress.errors.flush)
            done, counters = progress.snapshot()
            try:
                owned = await self.registry.job_progress(
                    job.id,
                    job.run,
                    bytes_done=done,
                    records=records_of(counters),
                    progress=counters,
                    error_count=progress.errors.total,
                    lease=LEASE,
                )
            except BackendUnavailable as exc:
                if not unreachable:  # the lease runs on: if it lapses, the next write says so
                    log.warning("processing %s: cannot record progress: %s", job.id, exc)
                unreachable = True
                continue
            unreachable = False
            if not owned:
                progress.stop(LOST)

    async def _abandon(self, job: Job, progress: Progress) -> None:
        """A run stopped by LOST (nothing to write) or UNAVAILABLE (hand the job back)."""
        if progress.stopped == LOST:
            log.warning("processing %s: run %d lost the job to another run", job.id, job.run)
            return
        with contextlib.suppress(BackendUnavailable):  # else its lease lapses
            if await self.registry.requeue_job(job.id, job.run, refund=True):
                JOBS.labels("requeued").inc()
                log.warning("re-queued processing job %s (the registry was unreachable)", job.id)

    async def _finish(
        self,
        job: Job,
        progress: Progress,
        state: str,
        results: dict[str, Any],
        error: str | None,
    ) -> None:
        done, counters = progress.snapshot()
        count = progress.errors.total
        result = {"status": state, "plugins": results, "error": error}
        if not await self.registry.finish_job(
            job.id,
            job.run,
            state=state,
            result=result,
            error=error,
            bytes_done=done,
            records=records_of(counters),
            error_count=count,
        ):
            log.warning("processing %s: run %d lost the job to another run", job.id, job.run)
            return
        JOBS.labels(state).inc()
        BYTES.inc(done)
        JOB_COUNTS.counts = await self.registry.job_counts()
        outcome = outcome_of(state, results, count)
        extra = {"upload": job.id, "result": outcome, "error_count": count}
        if outcome == RESULT_FAILED:
            log.warning(
                "processing %s failed: %s (%d malformed rows)", job.id, error, count, extra=extra
            )
        else:
            log.info("processing %s %s: %d malformed rows", job.id, outcome, count, extra=extra)
        await self._emit_post_process(job.id)

    async def _emit_post_process(self, job_id: str) -> None:
        """Push the job result to hook receivers as a `post-process` event."""
        hooks = self.core.hooks
        if not hooks.wants(POST_PROCESS):
            return
        info = await self.registry.get(job_id)
        job = await self.registry.get_job(job_id)
        if info is None or job is None:
            return
        request = hooks.request_for(POST_PROCESS, info, HTTPRequest())
        request.event.processing = job_summary(job)
        await hooks.notify(POST_PROCESS, request)


def outcome_of(state: str, results: Mapping[str, Any], error_count: int) -> str | None:
    """ok / completed_with_errors / failed for an ended job; None while it is not ended."""
    if state == "failed":
        return RESULT_FAILED
    if state != "completed":
        return None
    with_errors = error_count or any(r.get("status") == "errors" for r in results.values())
    return RESULT_WITH_ERRORS if with_errors else RESULT_OK


def job_result(job: Job) -> str | None:
    """The outcome of a job (see outcome_of)."""
    plugins = (job.result or {}).get("plugins") or {}
    return outcome_of(job.state, plugins, job.error_count)


def job_summary(job: Job) -> dict[str, Any]:
    """The job as shown to hooks and on /status when it has ended."""
    plugins = (job.result or {}).get("plugins") or {}
    return {
        "status": job.state,
        "result": job_result(job),
        "plugins": job.plugins,
        "attempts": job.attempts,
        "bytes_processed": job.bytes_done,
        "records": job.records,
        "error_count": job.error_count,
        "error": job.error,
        "has_errors": any(r.get("status") in ("errors", "failed") for r in plugins.values()),
        "results": plugins,
    }


def attach(core: TusCore) -> JobRunner | None:
    """Wire processing into a core: post-finish subscription and background start/stop."""
    plugins = load_plugins(core.settings)
    if not plugins:
        return None
    runner = JobRunner(core, plugins)
    core.hooks.subscribe(POST_FINISH, "processing", runner.on_post_finish, lease=30.0)
    core.services.append(runner)
    RUNNERS[core] = runner
    JOB_COUNTS.counts = {}
    return runner


def runner_for(core: TusCore) -> JobRunner | None:
    """The job runner attached to `core`, if processing is configured."""
    return RUNNERS.get(core)


class _JobsInRegistry:
    """Scrape-time gauge of jobs per state in the shared registry (all processes).

    A collector cannot await the registry, so it shows the counts read by the recovery loop
    (every RECOVERY_INTERVAL) and after every job this process ends."""

    def __init__(self) -> None:
        self.counts: dict[str, int] | None = None  # None: processing is not configured

    def describe(self) -> list[GaugeMetricFamily]:
        return []

    def collect(self) -> list[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "tusserver_processing_jobs_in_state",
            "Processing jobs per state in the registry (all worker processes)",
            labels=["state"],
        )
        if self.counts is not None:
            for state in (QUEUED, PROCESSING, COMPLETED, JOB_FAILED):
                family.add_metric([state], self.counts.get(state, 0))
        return [family]


JOB_COUNTS = _JobsInRegistry()
REGISTRY.register(JOB_COUNTS)
