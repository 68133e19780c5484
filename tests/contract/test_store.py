"""The Store contract (tusserver/storage/base.py): what core and handlers rely on, checked
against every implementation without a server.

Adding a backend: write a builder (a context manager that yields a fresh, empty store and
cleans up after it) and add it to BUILDERS; every test then runs against it too. Tests only
use what the interface promises: `sync` may report less than was written (a store that keeps
whole parts), a store may keep parts that the core records with each offset, and an upload
is read once it is finished. `Upload` below plays the core and the registry for that: it
opens writers at the recorded offset with the recorded parts and a part-number counter,
records what sync or checkpoint says is durable with the writer's progress, and finishes the
upload once its last byte is recorded.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import s3_settings

from tusserver.config import Settings
from tusserver.errors import AlreadyExists
from tusserver.registry.base import Part, UploadInfo
from tusserver.storage import Store, Writer
from tusserver.storage.file import FileStore

MiB = 1024 * 1024


@contextlib.contextmanager
def file_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    yield FileStore(tmp_path / "store")


@contextlib.contextmanager
def s3_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh bucket on the session's S3 server (moto); parts of S3's minimum size, so
    uploads of a few MiB already use multipart."""
    from tusserver.storage.s3 import S3Store

    server, bucket = request.getfixturevalue("s3"), request.getfixturevalue("s3_bucket")
    values = s3_settings(server, bucket, s3_object_prefix="up/", s3_part_size=5 * MiB)
    store = S3Store(Settings(upload_dir=tmp_path / "scratch", **values))
    try:
        yield store
    finally:
        store.close()


BUILDERS: dict[
    str, Callable[[pytest.FixtureRequest, Path], contextlib.AbstractContextManager[Store]]
] = {"file": file_store, "s3": s3_store}


@pytest.fixture(params=sorted(BUILDERS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with BUILDERS[request.param](request, tmp_path) as built:
        yield built


class Upload:
    """One upload as the core and the registry keep it: the recorded offset, parts and
    store handle, and the registry's part-number counter (`reserve`)."""

    def __init__(self, store: Store, upload_id: str, length: int | None, *, create: bool = True):
        self.store = store
        self.info = UploadInfo(upload_id, length)
        self.parts: list[Part] = []
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        if create:
            store.create(upload_id)

    def reserve(self) -> int:
        with self._lock:
            return next(self._numbers)

    def writer(self) -> Writer:
        """A writer at the recorded offset (opened from this thread, never an event loop)."""
        return self.store.writer(replace(self.info), list(self.parts), self.reserve)

    def record(self, writer: Writer, offset: int) -> None:
        """Record a durable offset with the writer's progress, then tell the writer."""
        assert offset >= self.info.offset, "a durable offset never goes back"
        progress = writer.progress(offset)
        self.parts += progress.parts
        if progress.ref is not None:
            self.info.store_ref = progress.ref
        self.info.offset = offset
        writer.committed(offset)

    def sync(self, writer: Writer) -> int:
        durable = writer.sync()
        self.record(writer, durable)
        return durable

    def finish(self) -> None:
        """The last byte is recorded: assemble, then forget the parts (as the core does)."""
        assert self.info.finished
        self.store.finish(replace(self.info), list(self.parts))
        self.parts.clear()

    def put(self, data: bytes, piece: int = 7) -> None:
        """Store `data` from the recorded offset as a resuming client does: a writer at the
        recorded offset, the rest in pieces, record what sync says is durable, again until
        all is recorded; then finish if that was the last byte."""
        end = self.info.offset + len(data)
        while self.info.offset < end:
            rest = data[len(data) - (end - self.info.offset) :]
            with contextlib.closing(self.writer()) as writer:
                taken = writer.write([rest[i : i + piece] for i in range(0, len(rest), piece)])
                assert taken == len(rest)
                before = self.info.offset
                synced = self.sync(writer)
            assert before < synced <= end, "each sync must make progress"
        if self.info.finished:
            self.finish()


def put(store: Store, upload_id: str, data: bytes, piece: int = 7) -> Upload:
    """A new upload of `data`, stored and finished."""
    upload = Upload(store, upload_id, len(data))
    upload.put(data, piece)
    return upload


def read(store: Store, upload_id: str, start: int = 0, end: int | None = None) -> bytes:
    with store.reader(upload_id, start, end) as reader:
        return b"".join(reader)


def chunks(store: Store, upload_id: str, start: int, end: int | None, chunk: int) -> list[bytes]:
    with store.reader(upload_id, start, end, chunk) as reader:
        return list(reader)


def test_missing_has_size_zero_and_an_empty_upload_reads_empty(store: Store) -> None:
    assert store.size("nothing") == 0
    upload = Upload(store, "u1", 0)
    assert store.size("u1") == 0
    upload.finish()  # complete at creation
    assert store.size("u1") == 0
    assert read(store, "u1") == b""


def test_sync_reports_the_durable_offset(store: Store) -> None:
    upload = Upload(store, "u1", 13)
    with contextlib.closing(upload.writer()) as writer:
        assert writer.write([b"hello ", b"", b"world"]) == 11
        synced = upload.sync(writer)
        assert 0 < synced <= 11
        assert writer.write([b"!!"]) == 2
        synced_again = upload.sync(writer)
        assert synced <= synced_again <= 13
    upload.put(b"hello world!!"[synced_again:])
    assert read(store, "u1") == b"hello world!!"


def test_checkpoint_never_reports_more_than_sync(store: Store) -> None:
    """checkpoint says what is durable without forcing it: never past what was written,
    never below the recorded offset; recording it and going on loses nothing."""
    data = os.urandom(12 * MiB + 3)
    upload = Upload(store, "u1", len(data))
    with contextlib.closing(upload.writer()) as writer:
        for start in range(0, len(data), MiB):
            writer.write([data[start : start + MiB]])
            durable = writer.checkpoint(start + len(data[start : start + MiB]))
            assert upload.info.offset <= durable <= start + len(data[start : start + MiB])
            upload.record(writer, durable)
        assert upload.sync(writer) == len(data)
    upload.finish()
    assert read(store, "u1") == data


def test_reopening_at_the_recorded_offset_discards_what_came_after(store: Store) -> None:
    upload = Upload(store, "u1", 13)
    upload.put(b"0123456789")
    with contextlib.closing(upload.writer()) as writer:
        writer.write([b"nev"])  # the request failed: no sync, no record
    with contextlib.closing(upload.writer()) as writer:
        writer.write([b"abc"])
        assert upload.sync(writer) == 13
    upload.finish()
    assert store.size("u1") == 13
    assert read(store, "u1") == b"0123456789abc"


def test_discard_after_forgets_a_rejected_chunk(store: Store) -> None:
    data = b"first-good-after"
    upload = Upload(store, "u1", len(data))
    upload.put(b"first")
    with contextlib.closing(upload.writer()) as writer:
        writer.write([b"-good"])
        kept = upload.sync(writer)
        writer.write([b"-rejected by its checksum"])
        writer.discard_after(kept)
        writer.write([data[kept:]])
        assert upload.sync(writer) == len(data)
    upload.finish()
    assert read(store, "u1") == data


def test_discard_after_drops_whole_parts_in_flight(store: Store) -> None:
    """A rejected chunk of several parts' worth (a store that keeps parts has some in
    flight or done, none recorded): gone, and the writer goes on from the recorded offset."""
    good, bad = os.urandom(3 * MiB), os.urandom(11 * MiB)
    upload = Upload(store, "u1", 2 * len(good))
    with contextlib.closing(upload.writer()) as writer:
        writer.write([good[:MiB]])
        kept = upload.sync(writer)
        writer.write([bad[i : i + MiB] for i in range(0, len(bad), MiB)])
        writer.discard_after(kept)
        writer.write([good[kept:], good])
        assert upload.sync(writer) == len(good) * 2
    upload.finish()
    assert read(store, "u1") == good + good


def test_discard_after_refuses_offsets_below_the_writer(store: Store) -> None:
    upload = put(store, "u1", b"recorded")
    with contextlib.closing(upload.writer()) as writer, pytest.raises(ValueError):
        writer.discard_after(7)
    assert read(store, "u1") == b"recorded"


def test_many_writers_of_one_upload(store: Store) -> None:
    """Requests of 1 MiB, 3 MiB and 8 MiB (below, around and above a part) each with their
    own writer, as a client's chunks reach one instance or another."""
    data = os.urandom(30 * MiB + 12345)
    upload = Upload(store, "u1", len(data))
    sizes = itertools.cycle([MiB, 3 * MiB, 8 * MiB, 1])
    while not upload.info.finished:
        start = upload.info.offset
        with contextlib.closing(upload.writer()) as writer:
            size = min(next(sizes), len(data) - start)
            writer.write([data[start : start + size]])
            upload.sync(writer)
    upload.finish()
    assert read(store, "u1") == data


def test_deferred_length(store: Store) -> None:
    """The length arrives with a later request (creation-defer-length)."""
    data = os.urandom(7 * MiB)
    upload = Upload(store, "u1", None)
    upload.put(data[:MiB], piece=MiB)
    upload.put(data[MiB : 6 * MiB], piece=MiB)
    upload.info.length = len(data)
    upload.put(data[6 * MiB :], piece=MiB)
    assert read(store, "u1") == data


def test_length_declared_at_the_offset(store: Store) -> None:
    """A deferred length declared equal to the offset, with an empty request: that writer's
    sync completes the upload (a store that keeps parts makes its last one then)."""
    data = os.urandom(6 * MiB + 5)
    upload = Upload(store, "u1", None)
    upload.put(data, piece=MiB)
    upload.info.length = len(data)
    with contextlib.closing(upload.writer()) as writer:
        assert upload.sync(writer) == len(data)
    upload.finish()
    assert read(store, "u1") == data


def test_finish_is_idempotent(store: Store) -> None:
    """finish again (a repair after a crash or an outage), also with the parts forgotten."""
    data = os.urandom(6 * MiB + 1)
    upload = Upload(store, "u1", len(data))
    upload.put(data, piece=MiB)
    assert not upload.parts
    upload.finish()
    assert read(store, "u1") == data
    assert store.size("u1") == len(data)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0, None, slice(0, 100)),
        (10, 20, slice(10, 20)),
        (0, 1, slice(0, 1)),
        (99, 100, slice(99, 100)),
        (50, None, slice(50, 100)),
        (30, 30, slice(0, 0)),
        (90, 500, slice(90, 100)),  # past the stored end: stops there, as a slice does
        (100, None, slice(0, 0)),
        (200, 300, slice(0, 0)),
    ],
)
def test_reader_ranges(store: Store, start: int, end: int | None, expected: slice) -> None:
    data = bytes(range(100))
    put(store, "u1", data)
    assert read(store, "u1", start, end) == data[expected]


@pytest.mark.parametrize("chunk", [1, 7, 10, 33, 64, 1000])
def test_reader_chunks_are_bounded_and_never_empty(store: Store, chunk: int) -> None:
    data = os.urandom(640)
    put(store, "u1", data, piece=100)
    for start, end in [(0, None), (3, 640), (5, 75), (0, 64)]:
        got = chunks(store, "u1", start, end, chunk=chunk)
        assert all(0 < len(c) <= chunk for c in got)
        assert b"".join(got) == data[start:end]


def test_reader_refuses_invalid_arguments(store: Store) -> None:
    put(store, "u1", b"x")
    for args in [(-1, None, 10), (5, 4, 10), (0, None, 0), (0, 10, -1)]:
        with pytest.raises(ValueError):
            store.reader("u1", *args)


def test_reader_of_a_missing_upload(store: Store) -> None:
    with pytest.raises(FileNotFoundError):
        store.reader("missing")
    with pytest.raises(FileNotFoundError):
        store.reader("missing", 5, 5)


def test_creating_an_existing_upload_never_harms_the_first(store: Store) -> None:
    """Two creations racing for one (hook-chosen) id: a store that can tell raises
    AlreadyExists (409); one whose creation is free of side effects (S3: nothing exists
    before the first byte) leaves it to the registry. Either way the first one's bytes
    stay."""
    upload = Upload(store, "u1", 5)
    with contextlib.suppress(AlreadyExists):
        store.create("u1")
    upload.put(b"first")
    with contextlib.suppress(AlreadyExists):
        store.create("u1")
    assert read(store, "u1") == b"first"


def test_writer_past_zero_of_a_removed_upload_makes_up_nothing(store: Store) -> None:
    """A writer that lost its lock reopens an upload removed meanwhile: FileNotFoundError,
    when it opens or (a remote store) when it first writes, never an upload of zeros up to
    its offset."""
    upload = Upload(store, "u1", 100)
    upload.put(b"some bytes")
    store.remove("u1")
    with pytest.raises(FileNotFoundError):  # either step may find out
        writer = upload.writer()
        try:
            writer.write([b"more"])
            writer.sync()
        finally:
            writer.close()
    assert store.size("u1") == 0
    with pytest.raises(FileNotFoundError):
        store.reader("u1")


def test_reader_closes_early_and_twice(store: Store) -> None:
    put(store, "u1", b"x" * 100)
    reader = store.reader("u1", chunk=10)
    first = next(iter(reader))
    assert first == b"x" * 10
    reader.close()
    reader.close()


def test_remove_is_idempotent(store: Store) -> None:
    put(store, "u1", b"data")
    store.remove("u1")
    store.remove("u1")
    store.remove("never-created")
    assert store.size("u1") == 0
    with pytest.raises(FileNotFoundError):
        store.reader("u1")


def test_remove_of_an_unfinished_upload(store: Store) -> None:
    """Removal mid-upload (termination, expiry): nothing of it can be read or resumed."""
    upload = Upload(store, "u1", 20 * MiB)
    upload.put(os.urandom(7 * MiB), piece=MiB)
    store.remove("u1")
    store.remove("u1")
    assert store.size("u1") == 0
    with pytest.raises(FileNotFoundError):
        store.reader("u1")


def test_concat(store: Store) -> None:
    if not store.can_concat:
        pytest.skip(f"{store.kind} does not concatenate")
    parts = {"p1": b"alpha ", "p2": b"", "p3": os.urandom(3 * MiB + 5), "p4": b"omega"}
    sources = [put(store, upload_id, data, piece=MiB).info for upload_id, data in parts.items()]
    final = Upload(store, "final", sum(len(d) for d in parts.values()))
    store.concat(replace(final.info), sources)
    final.info.offset = final.info.length or 0
    final.finish()
    assert store.size("final") == sum(len(d) for d in parts.values())
    assert read(store, "final") == b"".join(parts.values())


def test_concat_of_a_missing_source(store: Store) -> None:
    if not store.can_concat:
        pytest.skip(f"{store.kind} does not concatenate")
    source = put(store, "p1", b"here").info
    Upload(store, "final", 8)
    with pytest.raises(FileNotFoundError):
        store.concat(UploadInfo("final", 8), [source, UploadInfo("gone", 4, offset=4)])


def test_storage_info_and_local_path(store: Store) -> None:
    put(store, "u1", b"payload")
    info = store.storage_info("u1")
    assert info["Type"] == store.kind
    path = store.local_path("u1")
    if path is None:
        assert "Path" not in info
    else:
        assert info["Path"] == str(path)
        assert path.read_bytes() == b"payload"


def test_max_object_size(store: Store) -> None:
    limit = store.max_object_size()
    assert limit is None or limit > 0


def test_free_space_and_check(store: Store) -> None:
    free = store.free_space()
    assert free is None or free >= 0
    store.check()


INVALID_IDS = ["", ".", "..", "../outside", "a/b", "/etc/passwd", "a\x00b", "a.b", "x" * 129]


@pytest.mark.parametrize("bad", INVALID_IDS)
def test_invalid_ids_are_refused(store: Store, tmp_path: Path, bad: str) -> None:
    (tmp_path / "outside").write_bytes(b"untouched")
    store.create("good")
    before = sorted(tmp_path.rglob("*"))
    calls: list[Callable[[], object]] = [
        lambda: store.create(bad),
        lambda: store.writer(UploadInfo(bad, 10)),
        lambda: store.reader(bad),
        lambda: store.remove(bad),
        lambda: store.size(bad),
        lambda: store.local_path(bad),
        lambda: store.storage_info(bad),
    ]
    if store.needs_finish:
        calls.append(lambda: store.finish(UploadInfo(bad, 0), []))
    if store.can_concat:
        calls += [
            lambda: store.concat(UploadInfo(bad, 0), []),
            lambda: store.concat(UploadInfo("good", 0), [UploadInfo(bad, 0)]),
        ]
    for call in calls:
        with pytest.raises(ValueError):
            call()
    assert sorted(tmp_path.rglob("*")) == before
    assert (tmp_path / "outside").read_bytes() == b"untouched"


def test_large_upload_streams_in_bounded_chunks(store: Store) -> None:
    """64 MiB in and out without ever holding more than one chunk (checked by chunk size:
    the reader hands out nothing larger)."""
    block = os.urandom(MiB)
    data = b"".join(i.to_bytes(8, "big") + block[8:] for i in range(64))
    put(store, "big", data, piece=MiB)
    read_back = hashlib.sha256()
    with store.reader("big", chunk=256 * 1024) as reader:
        for chunk in reader:
            assert 0 < len(chunk) <= 256 * 1024
            read_back.update(chunk)
    assert read_back.digest() == hashlib.sha256(data).digest()


# Promises of particular stores, beyond the contract.


def test_file_writer_syncs_everything_and_tracks_its_position(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.create("u1")
    with contextlib.closing(store.writer(UploadInfo("u1", None))) as writer:
        writer.write([b"abc", b"defg"])
        assert writer.sync() == 7
        writer.write([b"hij"])
        writer.discard_after(8)
        assert writer.sync() == 8
        with pytest.raises(ValueError):
            writer.discard_after(9)  # past what it holds: would pad the file with zeros
    with contextlib.closing(store.writer(UploadInfo("u1", None, offset=8))) as writer:
        writer.write([b"XY"])
        assert writer.sync() == 10
    assert store.local_path("u1").read_bytes() == b"abcdefghXY"
    assert store.storage_info("u1") == {"Type": "filestore", "Path": str(tmp_path / "u1")}
