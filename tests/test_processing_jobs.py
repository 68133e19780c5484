"""In-process checks of the job runner: the pipeline reads uploads only through the store's
reader, report rows cross from plugin threads into the registry, and a run that stalled past
its lease loses the job to another instance and cannot write anything after that."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tusserver.backends import Backends, build
from tusserver.config import Settings
from tusserver.hooks import Hooks
from tusserver.processing import jobs
from tusserver.processing.csvplugin import CsvPlugin
from tusserver.processing.jobs import JobRunner, Progress, run_pipeline
from tusserver.processing.plugin import Context, Plugin
from tusserver.processing.validate import ValidatePlugin
from tusserver.registry import COMPLETE, UploadInfo
from tusserver.registry.base import COMPLETED, PROCESSING
from tusserver.storage import Reader, Store
from tusserver.storage.base import READ_CHUNK
from tusserver.storage.file import FileStore

UPLOAD = "a" * 32
RAGGED = b"id,name\r\n1,x\r\n2\r\n3,y,z\r\n4,w\r\n"  # two malformed rows: lines 3 and 4


class CountingStore:
    """What processing may use of a store: reader, counted. There is no local path."""

    def __init__(self, inner: Store):
        self.inner = inner
        self.reads: list[tuple[str, int, int | None]] = []

    def reader(
        self, upload_id: str, start: int = 0, end: int | None = None, chunk: int = READ_CHUNK
    ) -> Reader:
        self.reads.append((upload_id, start, end))
        return self.inner.reader(upload_id, start, end, chunk)

    def local_path(self, upload_id: str) -> Path:
        raise AssertionError("processing must read through Store.reader")

    def storage_info(self, upload_id: str) -> dict[str, str]:
        return {"Type": "counting"}


def stored(store: Store, upload_id: str, data: bytes) -> None:
    store.create(upload_id)
    writer = store.writer(UploadInfo(upload_id, len(data)))
    writer.write([data])
    writer.sync()
    writer.close()


@contextlib.asynccontextmanager
async def instance(
    tmp_path: Path, plugins: dict[str, type[Plugin]]
) -> AsyncIterator[tuple[JobRunner, Backends, CountingStore]]:
    """One server instance's job runner on the backends of `tmp_path` (several at once on one
    directory share the database, like instances sharing PostgreSQL)."""
    settings = Settings(upload_dir=tmp_path, plugins=list(plugins))
    backends = build(settings)
    await backends.start()
    store = CountingStore(backends.store)
    core: Any = SimpleNamespace(
        settings=settings,
        registry=backends.registry,
        liveness=backends.liveness,
        store=store,
        hooks=Hooks(settings, backends.registry, store, backends.liveness, backends=[]),
    )
    runner = JobRunner(core, plugins)
    try:
        yield runner, backends, store
    finally:
        await runner.stop()
        await backends.close()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def test_pipeline_reads_through_the_store(tmp_path):
    """One reader over the whole upload feeds every plugin; no local path is asked for."""
    store = CountingStore(FileStore(tmp_path))
    stored(store.inner, UPLOAD, RAGGED)
    ctx = Context(UPLOAD, len(RAGGED), settings=Settings(upload_dir=tmp_path))
    plugins: dict[str, type[Plugin]] = {"validate": ValidatePlugin, "csv": CsvPlugin}
    state, results, error = run_pipeline(store, ctx, plugins, Progress())  # type: ignore[arg-type]
    assert (state, error) == (COMPLETED, None)
    assert results["validate"]["digests"]["sha256"] == hashlib.sha256(RAGGED).hexdigest()
    assert results["csv"]["records"] == 4
    assert store.reads == [(UPLOAD, 0, None)]
    assert ctx.errors.total == 2


def test_job_runs_through_the_store_and_reports_rows(tmp_path):
    """A queued job is claimed, read through the store, its malformed rows reach the registry
    from the plugin threads, and it ends completed_with_errors."""

    async def run() -> None:
        plugins: dict[str, type[Plugin]] = {"validate": ValidatePlugin, "csv": CsvPlugin}
        async with instance(tmp_path, plugins) as (runner, backends, store):
            registry = backends.registry
            stored(store.inner, UPLOAD, RAGGED)
            await registry.create(UploadInfo(UPLOAD, len(RAGGED), len(RAGGED), state=COMPLETE))
            runner.start()
            assert await runner.enqueue(UPLOAD)

            async def ended() -> bool:
                job = await registry.get_job(UPLOAD)
                return job is not None and job.state == COMPLETED

            await eventually(ended)
            job = await registry.get_job(UPLOAD)
            assert job is not None and jobs.job_result(job) == jobs.RESULT_WITH_ERRORS
            assert job.error_count == 2 and job.bytes_done == len(RAGGED)
            rows = await registry.job_errors_page(UPLOAD, job.run)
            assert [(row.plugin, row.line) for row in rows] == [("csv", 3), ("csv", 4)]
            assert store.reads == [(UPLOAD, 0, None)]

    asyncio.run(run())


class Gated(Plugin):
    """Test-only: holds its first chunk until the gate opens or the run is stopped."""

    name = "gated"
    gate = threading.Event()

    def feed(self, chunk: bytes) -> None:
        self.report(1, "kind", "seen before the stall")
        while not Gated.gate.is_set() and not self.ctx.cancelled():
            time.sleep(0.01)


def test_stalled_run_loses_its_job_and_writes_nothing(tmp_path, monkeypatch, caplog):
    """The first instance's run stalls past its lease (here: a lease of 0, which has lapsed
    the moment it is taken or extended, whenever the progress writes happen); the second
    instance re-queues the job as lapsed (the first is alive, so liveness does not call it
    dead) and claims it. The stalled run's next progress write is refused: it stops its
    pipeline and writes nothing more; its writes are fenced off."""
    monkeypatch.setattr(jobs, "LEASE", 0.0)
    monkeypatch.setattr(jobs, "RECOVERY_INTERVAL", 60.0)  # only the test re-queues
    Gated.gate.clear()

    async def run() -> None:
        plugins: dict[str, type[Plugin]] = {"gated": Gated}
        async with (
            instance(tmp_path, plugins) as (stalled, backends, store),
            instance(tmp_path, plugins) as (other, _, _),
        ):
            registry = backends.registry
            stored(store.inner, UPLOAD, b"some bytes")
            await registry.create(UploadInfo(UPLOAD, 10, 10, state=COMPLETE))
            assert await stalled.enqueue(UPLOAD)
            stalled.start()

            async def running() -> bool:
                job = await registry.get_job(UPLOAD)
                return job is not None and job.state == PROCESSING

            await eventually(running)
            assert await other.liveness.dead([stalled.liveness.token]) == []
            # recover and claim run inline on the SQLite registry (no await yields to the
            # event loop in between), so the stalled instance cannot claim the job back first
            assert await other.recover() == 1
            taken = await registry.claim_next_job(other.liveness.token, 30.0)
            assert taken is not None and taken.run == 2
            with caplog.at_level(logging.WARNING, "tusserver.processing"):

                async def gave_up() -> bool:
                    return "run 1 lost the job" in caplog.text

                await eventually(gave_up)
            assert await registry.get_job(UPLOAD) == taken  # nothing written by run 1
            assert await registry.job_errors_page(UPLOAD, 1) == []
            assert not await registry.job_progress(
                UPLOAD, 1, bytes_done=10, records=1, progress={}, error_count=1, lease=30.0
            )
            assert not await registry.add_job_errors(UPLOAD, 1, [("gated", 1, "k", "m", "")])
            assert not await registry.finish_job(
                UPLOAD,
                1,
                state=COMPLETED,
                result={},
                error=None,
                bytes_done=10,
                records=1,
                error_count=0,
            )
            assert not await registry.requeue_job(UPLOAD, 1, refund=True)

    asyncio.run(run())


@pytest.fixture(autouse=True)
def _open_gate() -> Iterator[None]:
    """No gated plugin thread outlives its test."""
    yield
    Gated.gate.set()
