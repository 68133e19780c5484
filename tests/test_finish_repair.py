"""Post-finish hooks are never lost: the registry marks an upload's finish pending together
with its last byte, and the core's finish repair records the post-finish deliveries of every
upload whose mark is still set (the registry failed, or the process died, in between).

In-process, as a mounted app runs; the registry failure is `add_deliveries` raising
BackendUnavailable once, as every registry does when its database is briefly gone. The
receiver is an in-process post-finish subscriber, as the processing pipeline is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from conftest import TUS

from tusserver import upkeep
from tusserver.app import create_app
from tusserver.config import Settings
from tusserver.core import TusCore
from tusserver.errors import BackendUnavailable
from tusserver.hooks import dispatch
from tusserver.hooks.model import POST_FINISH, HookRequest
from tusserver.registry.base import DONE

pytestmark = pytest.mark.anyio

OCTET = {**TUS, "Content-Type": "application/offset+octet-stream"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Receiver:
    """A post-finish subscriber that records what it got."""

    def __init__(self) -> None:
        self.seen: list[HookRequest] = []

    async def __call__(self, request: HookRequest) -> None:
        self.seen.append(request)

    def ids(self) -> list[str]:
        return [request.event.upload.id for request in self.seen]


@asynccontextmanager
async def serving(tmp_path: Any) -> AsyncIterator[tuple[httpx.AsyncClient, TusCore, Receiver]]:
    settings = Settings(upload_dir=tmp_path / "up", hooks_retry_delay=0.01)
    core = TusCore(settings)
    receiver = Receiver()
    core.hooks.subscribe(POST_FINISH, "audit", receiver)
    transport = httpx.ASGITransport(app=create_app(settings, core))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://tus") as client:
            yield client, core, receiver
    finally:
        await core.stop_background()


def failing_once(call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    failed = False

    async def once(*args: Any, **kwargs: Any) -> Any:
        nonlocal failed
        if not failed:
            failed = True
            raise BackendUnavailable("connection to db.internal:5432 reset", retry_after=3)
        return await call(*args, **kwargs)

    return once


async def eventually(condition: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Poll until `condition` holds (no sleeping as synchronisation)."""
    with anyio.fail_after(timeout):
        while not await condition():
            await anyio.sleep(0.01)


async def test_lost_post_finish_is_recorded_and_delivered_by_the_repair(tmp_path, monkeypatch):
    """Recording the post-finish deliveries fails after the last byte was recorded: the PATCH
    answers 503 (the client sees offset == length on HEAD and stops), the mark stays, and the
    repair records and delivers the hook once, with an empty HTTPRequest."""
    async with serving(tmp_path) as (client, core, receiver):
        created = await client.post("/files/", headers={**TUS, "Upload-Length": "3"})
        location = created.headers["Location"]
        upload_id = location.rsplit("/", 1)[1]
        monkeypatch.setattr(
            core.registry, "add_deliveries", failing_once(core.registry.add_deliveries)
        )
        patched = await client.patch(
            location, headers={**OCTET, "Upload-Offset": "0"}, content=b"abc"
        )
        assert patched.status_code == 503 and patched.headers["Retry-After"] == "3"
        head = await client.head(location, headers=TUS)
        assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == "3"
        assert await core.registry.deliveries(upload_id) == []
        assert await core.registry.pending_finishes(0) == [upload_id]

        assert await upkeep.repair_finishes(core, older_than=0) == 1

        async def delivered() -> bool:
            rows = await core.registry.deliveries(upload_id)
            return len(rows) == 1 and rows[0].state == DONE

        await eventually(delivered)
        assert receiver.ids() == [upload_id]
        [request] = receiver.seen
        assert request.type == POST_FINISH and request.event.upload.offset == 3
        assert request.event.http_request.method == ""  # no client request to describe
        assert await core.registry.pending_finishes(0) == []
        assert await upkeep.repair_finishes(core, older_than=0) == 0  # nothing left: no duplicate


async def test_repair_never_duplicates_a_recorded_finish(tmp_path):
    """An upload whose post-finish was recorded, but whose mark could not be cleared (a
    crash in between), is finished again by the repair without a second delivery."""
    async with serving(tmp_path) as (client, core, receiver):
        created = await client.post("/files/", headers={**TUS, "Upload-Length": "0"})
        upload_id = created.headers["Location"].rsplit("/", 1)[1]

        async def delivered() -> bool:
            return receiver.ids() == [upload_id]

        await eventually(delivered)
        assert await core.registry.pending_finishes(0) == []
        # the crash: the mark is set again, as if finish_recorded never ran
        await core.registry.set_state(upload_id, "active")
        await core.registry.set_offset(
            upload_id, expected=0, offset=0, expires=None, state="complete"
        )
        assert await core.registry.pending_finishes(0) == [upload_id]
        assert await upkeep.repair_finishes(core, older_than=0) == 1
        assert await core.registry.pending_finishes(0) == []
        assert len(await core.registry.deliveries(upload_id)) == 1
        assert receiver.ids() == [upload_id]


async def test_repair_leaves_recent_and_locked_uploads_alone(tmp_path, monkeypatch):
    """Within the grace period a request may still be finishing its upload; an upload whose
    lock someone holds is left for the next round."""
    async with serving(tmp_path) as (client, core, receiver):
        monkeypatch.setattr(
            core.registry, "add_deliveries", failing_once(core.registry.add_deliveries)
        )
        created = await client.post("/files/", headers={**TUS, "Upload-Length": "0"})
        assert created.status_code == 503
        [upload_id] = await core.registry.pending_finishes(0)
        assert core.hooks.finish_grace() >= dispatch.FINISH_GRACE
        assert await upkeep.repair_finishes(core) == 0  # completed just now
        async with core.locker.hold(upload_id, 0):
            assert await upkeep.repair_finishes(core, older_than=0) == 0
        assert await upkeep.repair_finishes(core, older_than=0) == 1

        async def delivered() -> bool:
            return receiver.ids() == [upload_id]

        await eventually(delivered)


async def test_background_repair_runs_without_being_asked(tmp_path, monkeypatch):
    """The repair runs in every process's background loop: a lost post-finish is delivered
    without any further request."""
    monkeypatch.setattr(upkeep, "REPAIR_INTERVAL", 0.01)
    monkeypatch.setattr(dispatch, "FINISH_GRACE", 0.0)
    async with serving(tmp_path) as (client, core, receiver):
        monkeypatch.setattr(
            core.registry, "add_deliveries", failing_once(core.registry.add_deliveries)
        )
        # the one failure hits the request or a repair round that came first: either way
        # the hook is delivered once
        created = await client.post("/files/", headers={**TUS, "Upload-Length": "0"})
        assert created.status_code in (201, 503)

        async def delivered() -> bool:
            return len(receiver.seen) == 1 and await core.registry.pending_finishes(0) == []

        await eventually(delivered)
        [row] = await core.registry.deliveries()
        assert receiver.ids() == [row.upload_id]


async def test_finished_uploads_leave_no_mark(tmp_path):
    """Normally the mark is cleared by the request that finished the upload, with hooks and
    without."""
    async with serving(tmp_path) as (client, core, _receiver):
        created = await client.post("/files/", headers={**TUS, "Upload-Length": "2"})
        location = created.headers["Location"]
        await client.patch(location, headers={**OCTET, "Upload-Offset": "0"}, content=b"ok")
        assert await core.registry.pending_finishes(0) == []
    plain = tmp_path / "plain"
    settings = Settings(upload_dir=plain / "up")
    core = TusCore(settings)
    assert not core.hooks.wants(POST_FINISH)
    transport = httpx.ASGITransport(app=create_app(settings, core))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://tus") as client:
            created = await client.post("/files/", headers={**TUS, "Upload-Length": "0"})
            assert created.status_code == 201
            assert await core.registry.pending_finishes(0) == []
    finally:
        await core.stop_background()
