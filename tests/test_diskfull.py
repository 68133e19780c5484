"""Disk full: uploads that cannot fit get 507, a PATCH that hits ENOSPC keeps what it wrote
(durable, recorded) so the client can resume later, and nothing is corrupted.

Two variants, each saying which it is: a real 8 MiB tmpfs mounted for the test (needs root,
which CI has; skipped with the reason otherwise) and a simulated ENOSPC through the store
(always runs, in-process)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from conftest import TUS, create_upload, patch

from tusserver.backends import build
from tusserver.config import Settings
from tusserver.core import REGISTRY_ROOM, TusCore
from tusserver.protocol import TusError
from tusserver.registry import UploadInfo
from tusserver.storage import StoreFull
from tusserver.storage.file import FileStore, FileWriter

MiB = 1024 * 1024


def test_disk_full_on_a_real_small_filesystem(make_server, tmpfs):
    """Real ENOSPC on tmpfs: 507 for a POST that cannot fit, 507 for a PATCH that fills the
    disk with the written part kept, /health 503 at the reserve, resume after space frees."""
    server = make_server("--min-free-space", "256K", upload_dir=tmpfs / "uploads")
    http = httpx.Client(timeout=30)

    too_big = http.post(server.url, headers={**TUS, "Upload-Length": str(8 * MiB)})
    assert too_big.status_code == 507  # fits the disk, not its free space (more: 413)
    assert "storage" in too_big.text

    data_a, data_b, data_c = os.urandom(3 * MiB), os.urandom(3 * MiB), os.urandom(3 * MiB)
    a = create_upload(http, server.url, len(data_a))
    b = create_upload(http, server.url, len(data_b))
    c = create_upload(http, server.url, len(data_c))
    assert patch(http, a, 0, data_a).status_code == 204
    assert patch(http, b, 0, data_b).status_code == 204

    full = patch(http, c, 0, data_c)  # ~1.5 MiB left on the disk: ENOSPC midway
    assert full.status_code == 507, full.text
    assert "storage" in full.text
    kept = int(http.head(c, headers=TUS).headers["Upload-Offset"])
    assert full.headers["Upload-Offset"] == str(kept)  # resume without asking first
    assert 0 <= kept < len(data_c)
    c_file = server.upload_dir / c.rsplit("/", 1)[-1]
    assert c_file.read_bytes()[:kept] == data_c[:kept]

    health = http.get(server.origin + "/health")
    assert health.status_code == 503
    assert health.json()["checks"]["disk"]["ok"] is False

    assert http.delete(a, headers=TUS).status_code == 204  # frees 3 MiB
    assert http.get(server.origin + "/health").status_code == 200
    resumed = patch(http, c, kept, data_c[kept:])
    assert resumed.status_code == 204, resumed.text
    assert c_file.read_bytes() == data_c
    assert (server.upload_dir / b.rsplit("/", 1)[-1]).read_bytes() == data_b
    http.close()


class _FullWriter(FileWriter):
    """Writes until the simulated device holds `capacity` bytes, then ENOSPC (short write)."""

    def __init__(self, path: Path, offset: int, capacity: int):
        super().__init__(path, offset)
        self.capacity = capacity

    def write(self, pieces: Sequence[bytes]) -> int:
        size = os.fstat(self.fd).st_size
        room = self.capacity - size
        data = b"".join(pieces)
        if len(data) > room:
            super().write([data[: max(0, room)]])
            raise StoreFull(28, "no space left for upload data (simulated)")
        return super().write(pieces)


class _FullStore(FileStore):
    capacity = 1 * MiB + 12345

    def writer(self, info: UploadInfo, parts: object = (), reserve: object = None) -> FileWriter:
        return _FullWriter(self.local_path(info.id), info.offset, self.capacity)


def test_enospc_simulated_through_the_store(tmp_path):
    """Simulated ENOSPC (store raises StoreFull after a short write): 507, the bytes that
    reached the file are kept and recorded, and a later PATCH resumes from there."""
    print("disk-full test uses a simulated ENOSPC through the store")
    _FullStore.capacity = 1 * MiB + 12345
    settings = Settings(upload_dir=tmp_path / "up")
    backends = dataclasses.replace(build(settings), store=_FullStore(settings.upload_dir))
    core = TusCore(settings, backends)
    data = os.urandom(3 * MiB)

    def body(chunks: list[bytes]):
        messages = [
            {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
            for i, chunk in enumerate(chunks)
        ]

        async def receive():
            return messages.pop(0)

        return receive

    async def send(upload_id: str, offset: int, payload: bytes) -> None:
        async with core.locked(upload_id, receiving=True) as (current, hold):
            assert current.offset == offset
            pieces = [payload[i : i + 64 * 1024] for i in range(0, len(payload), 64 * 1024)]
            await core.receive(body(pieces), current, hold)

    async def scenario() -> None:
        await core.start()
        info = await core.create(UploadInfo(id=core.new_id(), length=len(data)))
        path = core.store.local_path(info.id)
        assert path is not None
        with pytest.raises(TusError) as error:
            await send(info.id, 0, data)
        assert error.value.status == 507
        kept = (await core.load(info.id)).offset
        assert error.value.headers["Upload-Offset"] == str(kept)
        # what reached the file is kept, less the room given back for the registry's commit
        assert _FullStore.capacity - REGISTRY_ROOM <= kept <= _FullStore.capacity
        assert path.read_bytes() == data[:kept]

        _FullStore.capacity = len(data)  # space freed
        await send(info.id, kept, data[kept:])
        assert (await core.load(info.id)).offset == len(data)
        assert path.read_bytes() == data
        await core.stop_background()

    asyncio.run(scenario())
