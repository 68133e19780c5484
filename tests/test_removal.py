"""Removal of uploads (termination, expiry) and writers that lost their lock: a removed
upload never comes back to life, only lock holders remove, and a removal that failed keeps
the tombstone and is retried.

In-process, as a mounted app runs; "a writer that lost its lock" is the core called with the
info it loaded before the upload was removed, as such a writer holds it.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import httpx
import pytest
from conftest import TUS
from inprocess import OCTET, serving

from tusserver import upkeep
from tusserver.errors import BackendUnavailable
from tusserver.protocol import TusError
from tusserver.registry import ACTIVE, EXPIRED, TERMINATED

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def started_upload(client: httpx.AsyncClient, length: int, data: bytes) -> str:
    created = await client.post("/files/", headers={**TUS, "Upload-Length": str(length)})
    location = created.headers["Location"]
    response = await client.patch(location, headers={**OCTET, "Upload-Offset": "0"}, content=data)
    assert response.status_code == 204
    return location


async def test_a_writer_that_lost_its_lock_cannot_revive_a_deleted_upload(tmp_path):
    """A DELETE while a stalled writer still holds the upload's old info: the writer's
    offset write is refused (410) and the tombstone stays; its next writer finds no data
    and makes none up."""
    async with serving(tmp_path) as (client, core):
        location = await started_upload(client, 10, b"abc")
        upload_id = location.rsplit("/", 1)[1]
        stale = await core.registry.get(upload_id)
        assert stale is not None
        assert (await client.delete(location, headers=TUS)).status_code == 204
        with pytest.raises(TusError) as refused:
            await core.record_offset(copy.copy(stale), 3)
        assert refused.value.status == 410
        info = await core.registry.get(upload_id)
        assert info is not None and info.state == TERMINATED
        assert (await client.head(location, headers=TUS)).status_code == 410

        async def body() -> dict[str, Any]:
            return {"type": "http.request", "body": b"def", "more_body": False}

        async with core.holding(upload_id, receiving=True) as hold:
            with pytest.raises(TusError) as gone:
                await core.receive(body, copy.copy(stale), hold)
        assert gone.value.status == 410
        path = core.store.local_path(upload_id)
        assert path is not None and not path.exists()


async def test_only_lock_holders_remove_an_expired_upload(tmp_path):
    """GET and /status (no lock) answer 410 for an upload past its expiry but leave it to the
    sweep, which skips it while someone holds it and removes it afterwards."""
    async with serving(tmp_path) as (client, core):
        location = await started_upload(client, 10, b"abc")
        upload_id = location.rsplit("/", 1)[1]
        path = core.store.local_path(upload_id)
        assert path is not None
        assert await core.registry.set_offset(
            upload_id, expected=3, offset=3, expires=time.time() - 1, state=ACTIVE
        )
        async with core.locker.hold(upload_id, 5):  # a writer is still at it
            for url in (location, location + "/status"):
                answer = await client.get(url)
                assert answer.status_code == 410 and "expired" in answer.text
            info = await core.registry.get(upload_id)
            assert info is not None and info.state == ACTIVE and path.exists()
            assert await upkeep.cleanup_once(core) == 0  # locked: not abandoned after all
            assert path.exists()
        assert await upkeep.cleanup_once(core) == 1
        info = await core.registry.get(upload_id)
        assert info is not None and info.state == EXPIRED and not path.exists()


async def test_a_failed_removal_keeps_the_tombstone_and_is_retried(tmp_path, monkeypatch):
    """The data cannot be removed after the DELETE recorded the tombstone: the DELETE still
    succeeds (the URL answers 410), the failure is logged, and the sweep removes the data
    later."""
    async with serving(tmp_path) as (client, core):
        location = await started_upload(client, 10, b"abc")
        upload_id = location.rsplit("/", 1)[1]
        path = core.store.local_path(upload_id)
        assert path is not None
        real_remove = core.store.remove

        def failing_remove(upload_id: str) -> None:
            raise BackendUnavailable("file store cannot remove upload data: I/O error")

        monkeypatch.setattr(core.store, "remove", failing_remove)
        assert (await client.delete(location, headers=TUS)).status_code == 204
        assert (await client.head(location, headers=TUS)).status_code == 410
        assert path.exists()
        assert await upkeep.retry_removals(core) == 0  # still failing: kept for the next round
        monkeypatch.setattr(core.store, "remove", real_remove)
        assert await upkeep.cleanup_once(core) == 0  # the expiry sweep retries it
        assert not path.exists()
        assert not list((tmp_path / "up" / ".locks").glob(f"{upload_id}*"))
        assert await upkeep.retry_removals(core) == 0
        assert (await client.head(location, headers=TUS)).status_code == 410
