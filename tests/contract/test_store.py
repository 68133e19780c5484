"""The Store contract (tusserver/storage/base.py): what core and handlers rely on, checked
against every implementation without a server.

Adding a backend: write a builder (a context manager that yields a fresh, empty store and
cleans up after it) and add it to BUILDERS; every test then runs against it too. Tests only
use what the interface promises: `sync` may report less than was written (a store that keeps
whole parts), so uploads are stored the way core and a resuming client do it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tusserver.errors import AlreadyExists
from tusserver.storage import Store
from tusserver.storage.file import FileStore

MiB = 1024 * 1024


@contextlib.contextmanager
def file_store(tmp_path: Path) -> Iterator[Store]:
    yield FileStore(tmp_path / "store")


BUILDERS: dict[str, Callable[[Path], contextlib.AbstractContextManager[Store]]] = {
    "file": file_store
}


@pytest.fixture(params=sorted(BUILDERS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with BUILDERS[request.param](tmp_path) as built:
        yield built


def put(store: Store, upload_id: str, data: bytes, piece: int = 7) -> None:
    """Store `data` as core does for a client that resumes until done: a writer at the
    recorded offset, the rest in pieces, then record what sync says is durable."""
    recorded = 0
    while recorded < len(data):
        writer = store.writer(upload_id, recorded)
        try:
            rest = data[recorded:]
            taken = writer.write([rest[i : i + piece] for i in range(0, len(rest), piece)])
            assert taken == len(rest)
            synced = writer.sync()
        finally:
            writer.close()
        assert recorded < synced <= len(data), "each sync must make progress"
        recorded = synced


def read(store: Store, upload_id: str, start: int = 0, end: int | None = None) -> bytes:
    with store.reader(upload_id, start, end) as reader:
        return b"".join(reader)


def chunks(store: Store, upload_id: str, start: int, end: int | None, chunk: int) -> list[bytes]:
    with store.reader(upload_id, start, end, chunk) as reader:
        return list(reader)


def test_create_is_empty_and_missing_has_size_zero(store: Store) -> None:
    assert store.size("nothing") == 0
    store.create("u1")
    assert store.size("u1") == 0
    assert read(store, "u1") == b""


def test_sync_reports_the_durable_offset(store: Store) -> None:
    store.create("u1")
    with contextlib.closing(store.writer("u1", 0)) as writer:
        assert writer.write([b"hello ", b"", b"world"]) == 11
        synced = writer.sync()
        assert 0 < synced <= 11
        assert writer.write([b"!!"]) == 2
        synced_again = writer.sync()
        assert synced <= synced_again <= 13
    assert read(store, "u1", 0, synced_again) == b"hello world!!"[:synced_again]


def test_reopening_at_the_recorded_offset_discards_what_came_after(store: Store) -> None:
    store.create("u1")
    put(store, "u1", b"0123456789")
    with contextlib.closing(store.writer("u1", 10)) as writer:
        writer.write([b"never recorded"])  # the request failed: no sync, no record
    with contextlib.closing(store.writer("u1", 10)) as writer:
        assert store.size("u1") == 10
        writer.write([b"abc"])
        synced = writer.sync()
    assert read(store, "u1") == b"0123456789abc"[:synced]


def test_discard_after_forgets_a_rejected_chunk(store: Store) -> None:
    store.create("u1")
    put(store, "u1", b"first")
    with contextlib.closing(store.writer("u1", 5)) as writer:
        writer.write([b"-good"])
        kept = writer.sync()
        writer.write([b"-rejected by its checksum"])
        writer.discard_after(kept)
        writer.write([b"-after"])
        synced = writer.sync()
    assert read(store, "u1", 0, synced) == (b"first-good"[:kept] + b"-after")[:synced]


def test_discard_after_refuses_offsets_below_the_writer(store: Store) -> None:
    store.create("u1")
    put(store, "u1", b"recorded")
    with contextlib.closing(store.writer("u1", 8)) as writer, pytest.raises(ValueError):
        writer.discard_after(7)
    assert read(store, "u1") == b"recorded"


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
    store.create("u1")
    put(store, "u1", data)
    assert read(store, "u1", start, end) == data[expected]


@pytest.mark.parametrize("chunk", [1, 7, 10, 33, 64, 1000])
def test_reader_chunks_are_bounded_and_never_empty(store: Store, chunk: int) -> None:
    data = os.urandom(640)
    store.create("u1")
    put(store, "u1", data, piece=100)
    for start, end in [(0, None), (3, 640), (5, 75), (0, 64)]:
        got = chunks(store, "u1", start, end, chunk=chunk)
        assert all(0 < len(c) <= chunk for c in got)
        assert b"".join(got) == data[start:end]


def test_reader_refuses_invalid_arguments(store: Store) -> None:
    store.create("u1")
    for args in [(-1, None, 10), (5, 4, 10), (0, None, 0), (0, 10, -1)]:
        with pytest.raises(ValueError):
            store.reader("u1", *args)


def test_reader_of_a_missing_upload(store: Store) -> None:
    with pytest.raises(FileNotFoundError):
        store.reader("missing")


def test_creating_an_existing_upload_raises_already_exists(store: Store) -> None:
    """Two creations racing for one (hook-chosen) id: the second gets AlreadyExists (409),
    and the first one's bytes stay."""
    store.create("u1")
    put(store, "u1", b"first")
    with pytest.raises(AlreadyExists):
        store.create("u1")
    assert read(store, "u1") == b"first"


def test_writer_past_zero_of_a_removed_upload_makes_up_nothing(store: Store) -> None:
    """A writer that lost its lock reopens an upload removed meanwhile: FileNotFoundError,
    never an upload of zeros up to its offset."""
    store.create("u1")
    put(store, "u1", b"some bytes")
    store.remove("u1")
    with pytest.raises(FileNotFoundError):
        store.writer("u1", 10)
    assert store.size("u1") == 0
    with pytest.raises(FileNotFoundError):
        store.reader("u1")


def test_reader_closes_early_and_twice(store: Store) -> None:
    store.create("u1")
    put(store, "u1", b"x" * 100)
    reader = store.reader("u1", chunk=10)
    first = next(iter(reader))
    assert first == b"x" * 10
    reader.close()
    reader.close()


def test_remove_is_idempotent(store: Store) -> None:
    store.create("u1")
    put(store, "u1", b"data")
    store.remove("u1")
    store.remove("u1")
    store.remove("never-created")
    assert store.size("u1") == 0
    with pytest.raises(FileNotFoundError):
        store.reader("u1")


def test_concat(store: Store) -> None:
    if not store.can_concat:
        pytest.skip(f"{store.kind} does not concatenate")
    parts = {"p1": b"alpha ", "p2": b"", "p3": os.urandom(3 * MiB + 5)}
    for upload_id, data in parts.items():
        store.create(upload_id)
        put(store, upload_id, data, piece=MiB)
        store.finish(upload_id)
    store.create("final")
    store.concat("final", list(parts))
    store.finish("final")
    assert store.size("final") == sum(len(d) for d in parts.values())
    assert read(store, "final") == b"".join(parts.values())


def test_storage_info_and_local_path(store: Store) -> None:
    store.create("u1")
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
    before = sorted(tmp_path.rglob("*"))
    calls: list[Callable[[], object]] = [
        lambda: store.create(bad),
        lambda: store.writer(bad, 0),
        lambda: store.reader(bad),
        lambda: store.remove(bad),
        lambda: store.size(bad),
        lambda: store.local_path(bad),
        lambda: store.storage_info(bad),
    ]
    store.create("good")
    if store.can_concat:
        calls += [lambda: store.concat(bad, []), lambda: store.concat("good", [bad])]
    for call in calls:
        with pytest.raises(ValueError):
            call()
    assert sorted(p for p in tmp_path.rglob("*") if p.name != "good") == before
    assert (tmp_path / "outside").read_bytes() == b"untouched"


def test_large_upload_streams_in_bounded_chunks(store: Store) -> None:
    """64 MiB in and out without ever holding more than one chunk (checked by chunk size:
    the reader hands out nothing larger)."""
    block = os.urandom(MiB)
    data = b"".join(i.to_bytes(8, "big") + block[8:] for i in range(64))
    store.create("big")
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
    with contextlib.closing(store.writer("u1", 0)) as writer:
        writer.write([b"abc", b"defg"])
        assert writer.sync() == 7
        writer.write([b"hij"])
        writer.discard_after(8)
        assert writer.sync() == 8
        with pytest.raises(ValueError):
            writer.discard_after(9)  # past what it holds: would pad the file with zeros
    with contextlib.closing(store.writer("u1", 8)) as writer:
        writer.write([b"XY"])
        assert writer.sync() == 10
    assert store.local_path("u1").read_bytes() == b"abcdefghXY"
    assert store.storage_info("u1") == {"Type": "filestore", "Path": str(tmp_path / "u1")}
