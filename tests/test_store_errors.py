"""File system errors of the store are answered with their own status, never a 500: no space
(ENOSPC, a quota) 507, a creation racing for a taken id 409, anything else (EIO, a read-only
remount, permissions) 503 + Retry-After; and an upload whose data vanished is never revived
as a file of zeros.

The failures are injected into the os calls the file store makes (as root, permissions and
full disks cannot be staged for real; tests/test_diskfull.py uses a real small file system).
In-process, as a mounted app runs.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import TUS
from inprocess import OCTET, serving

from tusserver.errors import AlreadyExists, BackendUnavailable, StoreFull
from tusserver.hooks import HTTPResponse
from tusserver.registry import UploadInfo
from tusserver.storage.file import FileStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def fail_once(
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    code: int,
    when: Callable[..., bool] = lambda *args: True,
) -> list[int]:
    """os.<name> raises OSError(code) the first time `when(*args)` holds; the list counts
    the failures."""
    real = getattr(os, name)
    failures: list[int] = []

    def fake(*args: Any, **kwargs: Any) -> Any:
        if not failures and when(*args):
            failures.append(code)
            raise OSError(code, os.strerror(code))
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, fake)
    return failures


async def started_upload(client: httpx.AsyncClient, length: int, data: bytes) -> str:
    created = await client.post("/files/", headers={**TUS, "Upload-Length": str(length)})
    location = created.headers["Location"]
    response = await client.patch(location, headers={**OCTET, "Upload-Offset": "0"}, content=data)
    assert response.status_code == 204
    return location


async def resume(client: httpx.AsyncClient, location: str, offset: int, data: bytes) -> None:
    response = await client.patch(
        location, headers={**OCTET, "Upload-Offset": str(offset)}, content=data
    )
    assert response.status_code == 204, response.text


async def test_enospc_of_the_final_sync_keeps_what_was_confirmed(tmp_path, monkeypatch):
    """fdatasync fails with ENOSPC at the end of a body: 507 with the offset an earlier sync
    confirmed (a failed fdatasync confirms nothing), and the client resumes from there."""
    async with serving(tmp_path) as (client, _core):
        location = await started_upload(client, 6, b"abc")
        failures = fail_once(monkeypatch, "fdatasync", errno.ENOSPC)
        cut = await client.patch(location, headers={**OCTET, "Upload-Offset": "3"}, content=b"def")
        assert failures and cut.status_code == 507, cut.text
        assert cut.headers["Upload-Offset"] == "3"
        assert (await client.head(location, headers=TUS)).headers["Upload-Offset"] == "3"
        await resume(client, location, 3, b"def")
        assert (await client.get(location)).content == b"abcdef"


@pytest.mark.parametrize(
    ("call", "code"),
    [("fdatasync", errno.EIO), ("writev", errno.EIO), ("fdatasync", errno.EDQUOT)],
)
async def test_errors_while_receiving_say_where_to_resume(tmp_path, monkeypatch, call, code):
    """EIO of a write or the sync: 503 + Retry-After; a quota: 507. Both carry the offset
    recorded before, from which the client resumes."""
    async with serving(tmp_path) as (client, _core):
        location = await started_upload(client, 6, b"abc")
        failures = fail_once(monkeypatch, call, code)
        cut = await client.patch(location, headers={**OCTET, "Upload-Offset": "3"}, content=b"def")
        assert failures
        assert cut.status_code == (507 if code == errno.EDQUOT else 503), cut.text
        if cut.status_code == 503:
            assert cut.headers["Retry-After"]
        assert cut.headers["Upload-Offset"] == "3"
        await resume(client, location, 3, b"def")
        assert (await client.get(location)).content == b"abcdef"


def data_file_open(upload_dir: Path, *, creating: bool) -> Callable[..., bool]:
    """A `when` for os.open: opening an upload's data file (to create it, or to write)."""

    def when(path: Any, flags: int, *args: Any) -> bool:
        inside = os.path.dirname(os.fspath(path)) == str(upload_dir.resolve())
        return inside and bool(flags & os.O_EXCL) == creating and bool(flags & os.O_WRONLY)

    return when


async def test_no_inode_for_a_new_upload_is_507(tmp_path, monkeypatch):
    async with serving(tmp_path) as (client, _core):
        await client.options("/files/")  # started
        fail_once(monkeypatch, "open", errno.ENOSPC, data_file_open(tmp_path / "up", creating=True))
        refused = await client.post("/files/", headers={**TUS, "Upload-Length": "3"})
        assert refused.status_code == 507, refused.text
        created = await client.post("/files/", headers={**TUS, "Upload-Length": "3"})
        assert created.status_code == 201


async def test_read_only_store_is_503_with_the_offset(tmp_path, monkeypatch):
    async with serving(tmp_path) as (client, _core):
        location = await started_upload(client, 6, b"abc")
        fail_once(monkeypatch, "open", errno.EROFS, data_file_open(tmp_path / "up", creating=False))
        cut = await client.patch(location, headers={**OCTET, "Upload-Offset": "3"}, content=b"def")
        assert cut.status_code == 503 and cut.headers["Retry-After"], cut.text
        assert cut.headers["Upload-Offset"] == "3"
        await resume(client, location, 3, b"def")


async def test_a_hook_chosen_id_taken_by_a_racing_creation_is_409(tmp_path, monkeypatch):
    """Two POSTs race for one id chosen by a pre-create hook: both pass the hook's check, the
    second one finds the data file made by the first (not yet registered): 409, and the
    first one's file is left alone."""
    async with serving(tmp_path) as (client, core):
        await client.options("/files/")  # started
        chosen = "c" * 32
        first = core.store.local_path(chosen)
        assert first is not None
        first.write_bytes(b"first")  # the racing creation got here first

        async def choose(request: Any, info: UploadInfo) -> HTTPResponse:
            info.id = chosen
            return HTTPResponse()

        monkeypatch.setattr(core.hooks, "pre_create", choose)
        second = await client.post("/files/", headers={**TUS, "Upload-Length": "3"})
        assert second.status_code == 409, second.text
        assert first.read_bytes() == b"first"


async def test_vanished_data_is_410_never_zeros(tmp_path):
    """The data file of an active upload is gone (removed while a writer that lost its lock
    went on): PATCH answers 410 and makes no file of zeros up to the offset."""
    async with serving(tmp_path) as (client, core):
        location = await started_upload(client, 6, b"abc")
        path = core.store.local_path(location.rsplit("/", 1)[1])
        assert path is not None
        path.unlink()
        gone = await client.patch(location, headers={**OCTET, "Upload-Offset": "3"}, content=b"d")
        assert gone.status_code == 410, gone.text
        assert not path.exists()


# -- the mapping itself, call by call ---------------------------------------------------------


def test_file_store_maps_every_os_error(tmp_path, monkeypatch):
    store = FileStore(tmp_path)
    store.create("u1")
    with pytest.raises(AlreadyExists):
        store.create("u1")
    writer = store.writer(UploadInfo("u1", None))
    writer.write([b"abc"])
    fail_once(monkeypatch, "fdatasync", errno.ENOSPC)
    with pytest.raises(StoreFull):
        writer.sync()
    with pytest.raises(StoreFull):  # a failed sync confirms nothing written since
        writer.sync()
    writer.discard_after(0)
    writer.close()
    monkeypatch.undo()

    fail_once(monkeypatch, "pread", errno.EIO)
    with store.reader("u1") as reader, pytest.raises(BackendUnavailable):
        list(reader)
    monkeypatch.undo()

    fail_once(monkeypatch, "unlink", errno.EROFS)
    with pytest.raises(BackendUnavailable):
        store.remove("u1")
    monkeypatch.undo()

    fail_once(monkeypatch, "stat", errno.EACCES)
    with pytest.raises(BackendUnavailable):
        store.size("u1")
    monkeypatch.undo()

    store.create("final")
    fail_once(monkeypatch, "fdatasync", errno.ENOSPC)
    with pytest.raises(StoreFull):
        store.concat(UploadInfo("final", 3), [UploadInfo("u1", 3)])
    monkeypatch.undo()
    store.remove("u1")
    with pytest.raises(FileNotFoundError):  # a partial that is gone: the caller decides
        store.concat(UploadInfo("final", 3), [UploadInfo("u1", 3)])
    with pytest.raises(FileNotFoundError):
        store.reader("u1")
    with pytest.raises(FileNotFoundError):
        store.writer(UploadInfo("u1", None, offset=3))
    assert not store.local_path("u1").exists()
