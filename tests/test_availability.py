"""When a backend cannot be reached: every answer is 503 with Retry-After (never a 500), a
body cut short says where to resume, /ready says not ready, and the server recovers by itself.
Also what the backends decide: concatenation only with a store that can join uploads.

In-process, as a mounted app runs (no lifespan: the first request starts the core); the
outage is a registry method that raises BackendUnavailable, as every registry does when its
database is gone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from conftest import TUS

from tusserver import core as core_module
from tusserver.app import create_app
from tusserver.backends import build
from tusserver.config import Settings
from tusserver.core import TusCore
from tusserver.errors import BackendUnavailable
from tusserver.storage.file import FileStore

pytestmark = pytest.mark.anyio

OCTET = {**TUS, "Content-Type": "application/offset+octet-stream"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def down(*args: Any, **kwargs: Any) -> Any:
    raise BackendUnavailable("connection to db.internal:5432 refused", retry_after=7)


@asynccontextmanager
async def serving(settings: Settings, core: TusCore | None = None) -> AsyncIterator[Any]:
    """A client of the app; the core is stopped (backends closed) afterwards."""
    core = core or TusCore(settings)
    transport = httpx.ASGITransport(app=create_app(settings, core))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://tus") as client:
            yield client
    finally:
        await core.stop_background()


def unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "7"
    if response.request.method != "HEAD":
        assert "retry later" in response.text and "db.internal" not in response.text


async def test_unreachable_at_start_is_503_until_it_is_back(tmp_path, monkeypatch):
    """The registry cannot be opened: requests get 503 + Retry-After, /ready 503 "backends
    not started", and the server serves once the database is back, without a restart (the
    next request starts it)."""
    settings = Settings(upload_dir=tmp_path / "up")
    core = TusCore(settings)
    monkeypatch.setattr(core.registry, "open", down)
    async with serving(settings, core) as client:
        unavailable(await client.post("/files/", headers={**TUS, "Upload-Length": "3"}))
        not_ready = await client.get("/ready")
        assert not_ready.status_code == 503
        assert not_ready.json() == {"status": "not ready", "reason": "backends not started"}
        monkeypatch.undo()
        created = await client.post("/files/", headers={**TUS, "Upload-Length": "3"})
        assert created.status_code == 201
        assert (await client.get("/ready")).json() == {"status": "ready"}


async def test_requests_do_not_queue_behind_a_start_that_hangs(tmp_path, monkeypatch):
    """A database that accepts connections but does not answer: while one request's start
    attempt waits, every other request gets 503 + Retry-After at once (none queues behind
    it), and /metrics, /health and /ready answer at once (the probes as JSON)."""
    settings = Settings(upload_dir=tmp_path / "up")
    core = TusCore(settings)
    entered, answer = anyio.Event(), anyio.Event()
    real_open = core.registry.open

    async def hanging_open() -> None:
        entered.set()
        await answer.wait()
        await real_open()

    monkeypatch.setattr(core.registry, "open", hanging_open)
    async with serving(settings, core) as client:
        first: list[httpx.Response] = []

        async def first_request() -> None:
            first.append(await client.post("/files/", headers={**TUS, "Upload-Length": "3"}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(first_request)
            with anyio.fail_after(5):
                await entered.wait()
            with anyio.fail_after(2):  # at once: not after the attempt (it never ends here)
                others = [
                    await client.post("/files/", headers={**TUS, "Upload-Length": "3"})
                    for _ in range(3)
                ]
                ready = await client.get("/ready")
                health = await client.get("/health")
                scraped = await client.get("/metrics")
            for other in others:
                assert other.status_code == 503 and other.headers["Retry-After"]
            assert ready.status_code == 503
            assert ready.json() == {"status": "not ready", "reason": "backends not started"}
            assert health.status_code == 503 and health.json()["started"] is False
            assert scraped.status_code == 200
            answer.set()
        assert first[0].status_code == 201
        assert (await client.get("/ready")).json() == {"status": "ready"}


async def test_a_failed_start_is_retried_in_the_background(tmp_path, monkeypatch):
    """The start at lifespan failed and no upload request comes (a load balancer waits for
    /ready first): a background retry with backoff starts the backends anyway."""
    monkeypatch.setattr(core_module, "START_RETRY_FIRST", 0.01)
    settings = Settings(upload_dir=tmp_path / "up")
    core = TusCore(settings)
    attempts = 0
    real_open = core.registry.open

    async def flaky_open() -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            await down()
        await real_open()

    monkeypatch.setattr(core.registry, "open", flaky_open)
    async with serving(settings, core) as client:
        with pytest.raises(BackendUnavailable):
            await core.start()  # what the lifespan does

        async def ready() -> bool:
            return (await client.get("/ready")).status_code == 200

        with anyio.fail_after(10):
            while not await ready():
                await anyio.sleep(0.01)
        assert attempts == 3 and core.started


async def test_probes_alone_start_a_mounted_app(tmp_path):
    """A mounted app (no lifespan) behind a load balancer that sends uploads only once /ready
    says so: the probe begins a start attempt without waiting for it."""
    settings = Settings(upload_dir=tmp_path / "up")
    core = TusCore(settings)
    async with serving(settings, core) as client:
        first = await client.get("/ready")
        assert first.json() == {"status": "not ready", "reason": "backends not started"}

        with anyio.fail_after(10):
            while (await client.get("/ready")).status_code != 200:
                await anyio.sleep(0.01)
        assert core.started


async def test_backends_close_every_backend_even_if_one_fails(tmp_path, monkeypatch):
    backends = build(Settings(upload_dir=tmp_path / "up"))
    await backends.start()
    closed: list[str] = []

    async def failing_stop() -> None:
        closed.append("liveness")
        raise RuntimeError("owner file vanished")

    real_close = backends.locker.close

    async def counted_close() -> None:
        closed.append("locker")
        await real_close()

    monkeypatch.setattr(backends.liveness, "stop", failing_stop)
    monkeypatch.setattr(backends.locker, "close", counted_close)
    with pytest.raises(RuntimeError):
        await backends.close()
    assert closed == ["liveness", "locker"]
    with pytest.raises(BackendUnavailable):
        await backends.registry.ping()  # closed too


async def test_a_start_that_failed_part_way_is_closed(tmp_path, monkeypatch):
    """The registry opened, then the locks could not be set up: nothing stays open, after
    the failed start and after stop_background."""
    settings = Settings(upload_dir=tmp_path / "up")
    core = TusCore(settings)
    closes: list[str] = []
    real_close = core.registry.close

    async def counted_close() -> None:
        closes.append("registry")
        await real_close()

    monkeypatch.setattr(core.locker, "start", down)
    monkeypatch.setattr(core.registry, "close", counted_close)
    with pytest.raises(BackendUnavailable):
        await core.start()
    with pytest.raises(BackendUnavailable):
        await core.registry.ping()
    before = len(closes)
    await core.stop_background()
    assert len(closes) == before + 1 and not core.started
    with pytest.raises(BackendUnavailable):
        await core.registry.ping()


async def test_no_restart_after_shutdown(tmp_path):
    """A request that arrives after the lifespan shut the backends down gets 503; it does not
    connect them again."""
    settings = Settings(upload_dir=tmp_path / "up")
    core = TusCore(settings)
    async with serving(settings, core) as client:
        created = await client.post("/files/", headers={**TUS, "Upload-Length": "3"})
        assert created.status_code == 201
        await core.stop_background()
        late = await client.head(created.headers["Location"], headers=TUS)
        assert late.status_code == 503 and late.headers["Retry-After"]
        assert not core.started
        with pytest.raises(BackendUnavailable):
            await core.registry.ping()


async def test_registry_lost_while_serving(tmp_path, monkeypatch):
    """Every request through the app's one error boundary: 503 + Retry-After; /ready 503 with
    the reason; /health reports the registry check as failed."""
    settings = Settings(upload_dir=tmp_path / "up")
    core = TusCore(settings)
    async with serving(settings, core) as client:
        created = await client.post("/files/", headers={**TUS, "Upload-Length": "3"})
        location = created.headers["Location"]
        for method in ("get", "create", "ping"):
            monkeypatch.setattr(core.registry, method, down)
        unavailable(await client.head(location, headers=TUS))
        unavailable(await client.post("/files/", headers={**TUS, "Upload-Length": "3"}))
        ready = await client.get("/ready")
        assert ready.status_code == 503 and "registry" in ready.json()["reason"]
        health = await client.get("/health")
        assert health.status_code == 503 and health.json()["checks"]["registry"]["ok"] is False
        monkeypatch.undo()
        assert (await client.head(location, headers=TUS)).status_code == 200


async def test_registry_lost_during_a_body_says_where_to_resume(tmp_path, monkeypatch):
    """The offset cannot be recorded after a body: 503 with Upload-Offset (the offset recorded
    before), and a resume from there succeeds once the registry is back."""
    settings = Settings(upload_dir=tmp_path / "up")
    core = TusCore(settings)
    async with serving(settings, core) as client:
        created = await client.post("/files/", headers={**TUS, "Upload-Length": "6"})
        location = created.headers["Location"]
        first = await client.patch(
            location, headers={**OCTET, "Upload-Offset": "0"}, content=b"abc"
        )
        assert first.status_code == 204
        monkeypatch.setattr(core.registry, "set_offset", down)
        cut = await client.patch(location, headers={**OCTET, "Upload-Offset": "3"}, content=b"def")
        unavailable(cut)
        assert cut.headers["Upload-Offset"] == "3"
        monkeypatch.undo()
        resumed = await client.patch(
            location, headers={**OCTET, "Upload-Offset": "3"}, content=b"def"
        )
        assert resumed.status_code == 204 and resumed.headers["Upload-Offset"] == "6"
        assert (await client.get(location)).content == b"abcdef"


async def test_readiness_during_shutdown_and_disabled(tmp_path):
    """/ready: 200 {"status": "ready"} normally, 503 once shutdown began; '' turns it off."""
    settings = Settings(upload_dir=tmp_path / "up")
    core = TusCore(settings)
    async with serving(settings, core) as client:
        await client.options("/files/")  # the first upload request starts the backends
        assert (await client.get("/ready")).json() == {"status": "ready"}
        core.begin_shutdown()
        ready = await client.get("/ready")
        assert ready.status_code == 503 and ready.json()["reason"] == "shutting down"
    async with serving(Settings(upload_dir=tmp_path / "b", readiness_path="")) as client:
        assert (await client.get("/ready")).status_code == 404


class JoinlessStore(FileStore):
    can_concat = False


async def test_concatenation_only_when_the_store_can_join(tmp_path):
    """A store without `can_concat`: the extension is not advertised and, as tusd does,
    Upload-Concat is ignored (a partial is a plain upload, a final lacks its length: 400)."""
    settings = Settings(upload_dir=tmp_path / "up")
    backends = dataclasses.replace(build(settings), store=JoinlessStore(settings.upload_dir))
    async with serving(settings, TusCore(settings, backends)) as client:
        extensions = (await client.options("/files/")).headers["Tus-Extension"].split(",")
        assert "creation" in extensions and not any("concat" in e for e in extensions)
        partial = await client.post(
            "/files/", headers={**TUS, "Upload-Length": "1", "Upload-Concat": "partial"}
        )
        assert partial.status_code == 201
        head = await client.head(partial.headers["Location"], headers=TUS)
        assert "Upload-Concat" not in head.headers
        final = await client.post("/files/", headers={**TUS, "Upload-Concat": "final;/files/x"})
        assert final.status_code == 400
