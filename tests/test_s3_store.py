"""The S3 store in-process, against the session's S3 server (moto): what the contract suite
(tests/contract/test_store.py, which runs on S3 too) cannot see: the objects and multipart
uploads in the bucket, part sizes and numbers, headers and checksums sent, stale writers,
broken download streams and an unreachable service.

`Upload` (from the contract suite) plays the core and the registry: recorded offset, parts,
store handle and the part-number counter.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import math
import os
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, ResponseStreamingError
from conftest import free_port, s3_settings
from contract.test_store import Upload, read
from s3server import MotoServer

from tusserver.config import Settings
from tusserver.errors import BackendUnavailable, StoreFull
from tusserver.registry.base import UploadInfo
from tusserver.storage.s3 import S3Store
from tusserver.storage.s3_common import PartBody, TiB, mapped, part_sizes
from tusserver.storage.s3_signing import PAYLOAD_CONTEXT, PrecomputedPayloadAuth, signs_payload

MiB = 1024 * 1024
PREFIX = "up/"

StoreFactory = Callable[..., S3Store]


@pytest.fixture
def make_store(s3: MotoServer, s3_bucket: str, tmp_path: Path) -> Iterator[StoreFactory]:
    """S3 stores on this test's bucket; each `instance` has its own scratch directory (as
    separate server instances do). Parts of S3's 5 MiB minimum unless told otherwise."""
    built: list[S3Store] = []

    def build(instance: str = "a", **values: Any) -> S3Store:
        values = {"s3_object_prefix": PREFIX, "s3_part_size": 5 * MiB, **values}
        settings = Settings(upload_dir=tmp_path / instance, **s3_settings(s3, s3_bucket, **values))
        store = S3Store(settings)
        built.append(store)
        return store

    yield build
    for store in built:
        store.close()


@pytest.fixture
def store(make_store: StoreFactory) -> S3Store:
    return make_store()


def objects(s3: MotoServer, bucket: str) -> dict[str, int]:
    return s3.objects(bucket, PREFIX)


def tails(s3: MotoServer, bucket: str, upload_id: str) -> dict[str, int]:
    return s3.objects(bucket, f"{PREFIX}{upload_id}.")


def scratch_files(store: S3Store) -> list[str]:
    return sorted(p.name for p in store.scratch_dir.iterdir())


def drain(store: S3Store) -> None:
    """Wait for everything the store's pool was given (parts in flight, tail deletions)."""
    store.pool.shutdown(wait=True)


class Spy:
    """Records the calls (keyword arguments and answers) of one client method."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, client: Any, name: str):
        self.calls: list[dict[str, Any]] = []
        self.answers: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        original = getattr(client, name)

        def spy(**kwargs: Any) -> Any:
            with self._lock:
                self.calls.append(kwargs)
            answer = original(**kwargs)
            with self._lock:
                self.answers.append(answer)
            return answer

        monkeypatch.setattr(client, name, spy)


def test_one_mib_requests_across_writers_and_instances(
    make_store: StoreFactory, s3: MotoServer, s3_bucket: str
) -> None:
    """tus-js-client's 1 MiB chunks, each request a new writer on one of two instances: the
    object is byte-identical, every tail stays below the part minimum, and after finish no
    tail and no multipart upload is left."""
    stores = [make_store("a"), make_store("b")]
    data = os.urandom(17 * MiB + 321)
    upload = Upload(stores[0], "js", len(data))
    request = 0
    while not upload.info.finished:
        upload.store = stores[request % 2]
        request += 1
        start = upload.info.offset
        with contextlib.closing(upload.writer()) as writer:
            writer.write([data[start : start + MiB]])
            assert upload.sync(writer) == min(start + MiB, len(data))
        minimum = stores[0].part_sizes(len(data)).minimum
        assert all(size < minimum for size in tails(s3, s3_bucket, "js").values())
    assert [part.size for part in upload.parts] == [5 * MiB] * 3 + [2 * MiB + 321]
    upload.finish()
    for store in stores:
        drain(store)
    assert s3.read(s3_bucket, PREFIX + "js") == data
    assert objects(s3, s3_bucket) == {PREFIX + "js": len(data)}
    assert s3.open_multipart_uploads(s3_bucket) == []
    assert scratch_files(stores[0]) == scratch_files(stores[1]) == []


def test_3_and_8_mib_requests_alternating_between_instances(
    make_store: StoreFactory, s3: MotoServer, s3_bucket: str
) -> None:
    """tuspy with 3 MiB chunks (below a part) and 8 MiB ones (above), alternating."""
    stores = [make_store("a"), make_store("b")]
    data = os.urandom(40 * MiB + 7)
    upload = Upload(stores[0], "py", len(data))
    request = 0
    while not upload.info.finished:
        upload.store = stores[request % 2]
        size = (3 * MiB, 8 * MiB)[request % 2]
        request += 1
        start = upload.info.offset
        with contextlib.closing(upload.writer()) as writer:
            writer.write([data[start : start + size]])
            upload.sync(writer)
    assert all(part.size >= 5 * MiB for part in upload.parts[:-1])
    numbers = [part.number for part in upload.parts]
    assert numbers == sorted(set(numbers))
    upload.finish()
    assert s3.read(s3_bucket, PREFIX + "py") == data
    assert s3.open_multipart_uploads(s3_bucket) == []
    assert list(objects(s3, s3_bucket)) == [PREFIX + "py"]


def test_part_sizes_fit_10000_parts() -> None:
    """Every part but the last is at least ceil(length / 9,000) (numbers to spare for parts
    of interrupted requests), so any length up to 5 TiB fits S3's 10,000 parts."""
    for length in (5 * TiB, TiB, 100 * 1024**3, 50 * MiB * 9_000 + 1):
        sizes = part_sizes(length, 0, 50 * MiB, 5 * MiB)
        assert sizes.minimum >= math.ceil(length / 10_000)
        assert sizes.minimum <= sizes.preferred
        assert math.ceil(length / sizes.minimum) <= 9_000
    small = part_sizes(64 * MiB, 0, 50 * MiB, 5 * MiB)
    assert (small.preferred, small.minimum) == (50 * MiB, 5 * MiB)
    deferred = part_sizes(None, 2 * TiB, 50 * MiB, 5 * MiB)
    assert deferred.minimum >= math.ceil(2 * TiB / 9_000)
    unbounded = part_sizes(None, 0, 50 * MiB, 5 * MiB)  # configured sizes, see part_sizes
    assert (unbounded.preferred, unbounded.minimum) == (50 * MiB, 5 * MiB)
    uniform = part_sizes(TiB, 0, 64 * MiB, 64 * MiB)  # Cloudflare R2: equal parts
    assert uniform.preferred == uniform.minimum >= math.ceil(TiB / 9_000)


def test_a_huge_declared_length_sizes_the_writers_parts(store: S3Store) -> None:
    length = 5 * TiB
    writer = store.writer(UploadInfo("huge", length), (), lambda: 1)
    try:
        assert writer.sizes.minimum >= math.ceil(length / 10_000)
        assert writer.sizes.preferred >= writer.sizes.minimum
    finally:
        writer.close()
    assert store.max_object_size() == 5 * TiB


def test_equal_part_sizes_cut_exactly(make_store: StoreFactory) -> None:
    """With --s3-min-part-size equal to --s3-part-size every part but the last has that
    size, however the body arrives (services that need uniform parts)."""
    store = make_store(s3_part_size=6 * MiB, s3_min_part_size=6 * MiB)
    data = os.urandom(20 * MiB + 5)
    upload = Upload(store, "r2", len(data))
    for size in (7 * MiB + 1, 3 * MiB, 10 * MiB + 4):
        start = upload.info.offset
        with contextlib.closing(upload.writer()) as writer:
            chunk = data[start : start + size]
            writer.write([chunk[i : i + 100_003] for i in range(0, len(chunk), 100_003)])
            upload.sync(writer)
    assert [part.size for part in upload.parts] == [6 * MiB] * 3 + [2 * MiB + 5]
    upload.finish()
    assert read(store, "r2") == data


def test_a_stale_writer_cannot_replace_recorded_parts(
    store: S3Store, s3: MotoServer, s3_bucket: str
) -> None:
    """Two writers opened at the same recorded state (one lost its lock): the newer one
    records first; the stale one's parts get numbers of their own, its offset is refused
    (the registry's compare-and-set, played here by not recording it), and the completed
    object is the newer one's."""
    data = os.urandom(16 * MiB)
    upload = Upload(store, "stale", len(data))
    upload.put(data[:MiB], piece=MiB)
    stale = upload.writer()
    newer = upload.writer()
    try:
        stale.write([os.urandom(MiB)])  # whatever it sends, it is not recorded
        newer.write([data[MiB : 12 * MiB]])
        upload.sync(newer)
        stale.write([os.urandom(9 * MiB)])
        assert stale.sync() == 11 * MiB
        stale_numbers = {part.number for part in stale.progress(11 * MiB).parts}
    finally:
        stale.close()
        newer.close()
    recorded = {part.number for part in upload.parts}
    assert stale_numbers and recorded and not stale_numbers & recorded
    upload.put(data[12 * MiB :], piece=MiB)
    assert s3.read(s3_bucket, PREFIX + "stale") == data
    assert s3.open_multipart_uploads(s3_bucket) == []


def test_a_small_upload_is_one_put_with_its_headers(
    store: S3Store, s3: MotoServer, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    starts = Spy(monkeypatch, store.client, "create_multipart_upload")
    upload = Upload(store, "small", 3 * MiB)
    upload.info.metadata = {"filename": "../report 2024.csv", "filetype": "text/csv"}
    upload.put(os.urandom(3 * MiB), piece=MiB)
    assert starts.calls == []
    head = s3.client().head_object(Bucket=s3_bucket, Key=PREFIX + "small")
    assert head["ContentType"] == "text/csv"
    assert head["ContentDisposition"] == 'attachment; filename="report 2024.csv"'
    assert "-" not in head["ETag"]  # not a multipart object


def test_multipart_objects_carry_headers_and_settings(
    make_store: StoreFactory, s3: MotoServer, s3_bucket: str
) -> None:
    """Headers where S3 takes them (CreateMultipartUpload), a non-ASCII name as RFC 5987
    `filename*`, an unsafe media type left out; storage class and encryption applied."""
    store = make_store(s3_storage_class="STANDARD_IA", s3_sse="AES256")
    upload = Upload(store, "big", 6 * MiB)
    upload.info.metadata = {"filename": "Übersicht.csv", "filetype": "text/html; x=<script>"}
    upload.put(os.urandom(6 * MiB), piece=MiB)
    head = s3.client().head_object(Bucket=s3_bucket, Key=PREFIX + "big")
    assert head["ContentDisposition"] == (
        "attachment; filename=\"_bersicht.csv\"; filename*=UTF-8''%C3%9Cbersicht.csv"
    )
    assert head["ContentType"] != "text/html; x=<script>"
    assert head["StorageClass"] == "STANDARD_IA"
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ETag"].endswith('-2"')


def test_finish_is_idempotent_and_cleans_up(store: S3Store, s3: MotoServer, s3_bucket: str) -> None:
    """finish leaves the object only: tails deleted, other multipart uploads of the key
    (a stale writer's) aborted; again, with or without the parts, changes nothing."""
    data = os.urandom(13 * MiB)
    upload = Upload(store, "fin", len(data))
    upload.put(data[: 12 * MiB], piece=MiB)  # two parts and a tail of 2 MiB
    assert tails(s3, s3_bucket, "fin")
    s3.client().create_multipart_upload(Bucket=s3_bucket, Key=PREFIX + "fin")  # a stale one
    with contextlib.closing(upload.writer()) as writer:
        writer.write([data[12 * MiB :]])
        upload.sync(writer)
    parts = list(upload.parts)
    upload.finish()
    store.finish(replace(upload.info), parts)  # the repair, before the parts were dropped
    store.finish(replace(upload.info), [])  # and after
    assert objects(s3, s3_bucket) == {PREFIX + "fin": len(data)}
    assert s3.open_multipart_uploads(s3_bucket) == []
    assert s3.read(s3_bucket, PREFIX + "fin") == data


def test_remove_leaves_nothing(store: S3Store, s3: MotoServer, s3_bucket: str) -> None:
    upload = Upload(store, "gone", 30 * MiB)
    upload.put(os.urandom(12 * MiB), piece=MiB)  # parts, a tail, an open multipart upload
    s3.client().put_object(Bucket=s3_bucket, Key=PREFIX + "gone2", Body=b"another upload")
    assert s3.open_multipart_uploads(s3_bucket)
    store.remove("gone")
    store.remove("gone")
    assert objects(s3, s3_bucket) == {PREFIX + "gone2": 14}
    assert s3.open_multipart_uploads(s3_bucket) == []


def test_concat_copies_big_partials_inside_s3(
    store: S3Store, s3: MotoServer, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Partials of 6 MiB, 1 KiB, 12 MiB and 1 KiB: the big ones are copied by S3 (the
    12 MiB one after what the 1 KiB one before it lacks to be a part), the small ones go
    through the server; the parts are numbered 1..n."""
    sizes = {"a": 6 * MiB, "b": 1024, "c": 12 * MiB, "d": 1024}
    blobs = {name: os.urandom(size) for name, size in sizes.items()}
    sources = []
    for name, blob in blobs.items():
        source = Upload(store, name, len(blob))
        source.put(blob, piece=MiB)
        sources.append(source.info)
    copies = Spy(monkeypatch, store.client, "upload_part_copy")
    sent = Spy(monkeypatch, store.client, "upload_part")
    final = UploadInfo("final", sum(sizes.values()), metadata={"filename": "all.bin"})
    store.concat(final, sources)
    store.finish(replace(final, offset=final.length or 0), [])
    assert s3.read(s3_bucket, PREFIX + "final") == b"".join(blobs.values())
    assert [call["CopySourceRange"] for call in copies.calls] == [
        f"bytes=0-{6 * MiB - 1}",
        f"bytes={5 * MiB - 1024}-{12 * MiB - 1}",
    ]
    assert sum(call["ContentLength"] for call in sent.calls) == 5 * MiB + 1024
    head = s3.client().head_object(Bucket=s3_bucket, Key=PREFIX + "final", PartNumber=1)
    assert head["PartsCount"] == 4
    head = s3.client().head_object(Bucket=s3_bucket, Key=PREFIX + "final")
    assert head["ContentDisposition"] == 'attachment; filename="all.bin"'


def test_concat_of_small_partials_is_one_put(
    store: S3Store, s3: MotoServer, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = [os.urandom(1000), b"", os.urandom(2 * MiB)]
    sources = []
    for number, blob in enumerate(blobs):
        source = Upload(store, f"p{number}", len(blob))
        if blob:
            source.put(blob, piece=MiB)
        else:
            source.finish()
        sources.append(source.info)
    starts = Spy(monkeypatch, store.client, "create_multipart_upload")
    store.concat(UploadInfo("final", sum(map(len, blobs))), sources)
    assert starts.calls == []
    assert s3.read(s3_bucket, PREFIX + "final") == b"".join(blobs)


def test_strays_and_abort(store: S3Store, s3: MotoServer, s3_bucket: str) -> None:
    """Open multipart uploads under the prefix (moto dates every one 2010: all are old),
    none outside it; abort is idempotent."""
    client = s3.client()
    ref = client.create_multipart_upload(Bucket=s3_bucket, Key=PREFIX + "orphan")["UploadId"]
    client.create_multipart_upload(Bucket=s3_bucket, Key="elsewhere/orphan")
    assert store.strays(older_than=3600) == [("orphan", ref)]
    assert store.strays(older_than=100 * 365 * 86400) == []
    store.abort("orphan", ref)
    store.abort("orphan", ref)
    assert store.strays(older_than=0) == []


def test_without_a_prefix_strays_are_only_keys_shaped_like_our_ids(
    make_store: StoreFactory, s3: MotoServer, s3_bucket: str
) -> None:
    """The bucket root may hold another tool's multipart uploads (a backup in progress): the
    sweep must never abort those, only what looks like an upload of this server."""
    store = make_store(s3_object_prefix="")
    client = s3.client()
    ours = "0123456789abcdef0123456789abcdef"
    ref = client.create_multipart_upload(Bucket=s3_bucket, Key=ours)["UploadId"]
    for key in ("backups/2024/db.tar.zst", "backup", ours.upper()):
        client.create_multipart_upload(Bucket=s3_bucket, Key=key)
    assert store.strays(older_than=3600) == [(ours, ref)]


class BreakingBody:
    """A GetObject body that breaks after `after` bytes, as a dropped connection does."""

    def __init__(self, body: Any, after: int):
        self.body = body
        self.left = after

    def read(self, amount: int) -> bytes:
        if self.left <= 0:
            raise ResponseStreamingError(error="Connection broken: IncompleteRead")
        data: bytes = self.body.read(min(amount, self.left))
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.body.close()


def break_streams(
    monkeypatch: pytest.MonkeyPatch, store: S3Store, after: int, times: int
) -> list[dict[str, Any]]:
    """The first `times` GetObject streams of the store break after `after` bytes."""
    calls: list[dict[str, Any]] = []
    original = store.client.get_object

    def get_object(**kwargs: Any) -> Any:
        calls.append(kwargs)
        answer = original(**kwargs)
        if len(calls) <= times:
            answer["Body"] = BreakingBody(answer["Body"], after)
        return answer

    monkeypatch.setattr(store.client, "get_object", get_object)
    return calls


def test_reader_resumes_a_broken_stream(store: S3Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A range is one GET; when the stream breaks it goes on from where it broke, pinned to
    the object's ETag."""
    data = os.urandom(3 * MiB)
    upload = Upload(store, "csv", len(data))
    upload.put(data, piece=MiB)
    calls = break_streams(monkeypatch, store, after=MiB + 5, times=1)
    with store.reader("csv", 10, None, chunk=256 * 1024) as reader:
        got = list(reader)
    assert b"".join(got) == data[10:]
    assert all(0 < len(chunk) <= 256 * 1024 for chunk in got)
    assert [call.get("Range") for call in calls] == ["bytes=10-", f"bytes={10 + MiB + 5}-"]
    assert "IfMatch" not in calls[0] and calls[1]["IfMatch"]
    calls.clear()
    assert read(store, "csv", 0, None) == data
    assert "Range" not in calls[0]  # the whole object: no Range


def test_reader_gives_up_after_a_few_attempts(
    store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload = Upload(store, "csv", 1000)
    upload.put(os.urandom(1000), piece=1000)
    monkeypatch.setattr("tusserver.storage.s3.RESUME_DELAYS", (0.0, 0.0))
    calls = break_streams(monkeypatch, store, after=0, times=99)
    reader = store.reader("csv", chunk=100)
    with pytest.raises(BackendUnavailable):
        list(reader)
    assert len(calls) == 3


def test_an_unreachable_service_is_backend_unavailable(tmp_path: Path) -> None:
    """Nothing listens at the endpoint: every operation raises BackendUnavailable (503),
    never a botocore exception; a writer reports what is durable (its recorded offset) and
    keeps the failure for the core."""
    values = s3_settings(MotoServer(free_port()), "nowhere", s3_part_size=5 * MiB)
    store = S3Store(Settings(upload_dir=tmp_path, **values))
    store.client = store._health_client()  # no retries with backoff: a fast test
    try:
        upload = Upload(store, "u1", 20 * MiB)
        writer = upload.writer()
        writer.write([os.urandom(MiB)])
        assert writer.sync() == 0
        assert isinstance(writer.failure, BackendUnavailable)
        writer.close()
        writer = upload.writer()
        with pytest.raises(BackendUnavailable):  # a part fails, then writes do
            writer.write([os.urandom(6 * MiB)])
            drain(store)
            writer.write([b"more"])
        writer.close()
        checks: list[Callable[[], object]] = [
            lambda: store.reader("u1"),
            lambda: store.size("u1"),
            lambda: store.remove("u1"),
            lambda: store.finish(UploadInfo("u1", 3, offset=3), []),
            lambda: store.strays(0),
            lambda: store.abort("u1", "ref"),
            lambda: store.concat(UploadInfo("f", 1), [UploadInfo("u1", 1, offset=1)]),
            store.check,
        ]
        for check in checks:
            with pytest.raises(BackendUnavailable) as raised:
                check()
            assert "tusserver-test" not in str(raised.value)
        with pytest.raises(BackendUnavailable, match="S3 bucket nowhere is not reachable"):
            store.check()
    finally:
        store.close()


def test_error_mapping() -> None:
    """S3's answers as the server's exceptions (the codes moto cannot be made to send)."""

    def error(code: str, status: int) -> ClientError:
        response: Any = {
            "Error": {"Code": code, "Message": "secret detail"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
        return ClientError(response, "UploadPart")

    assert isinstance(mapped(error("NoSuchUpload", 404), "x", missing=True), FileNotFoundError)
    assert isinstance(mapped(error("NoSuchKey", 404), "x", missing=True), FileNotFoundError)
    assert isinstance(mapped(error("NoSuchKey", 404), "x"), BackendUnavailable)
    for code, status in [("EntityTooLarge", 400), ("XMinioStorageFull", 507), ("X", 507)]:
        assert isinstance(mapped(error(code, status), "x"), StoreFull)
    for code, status in [("SlowDown", 503), ("AccessDenied", 403), ("NoSuchBucket", 404)]:
        exc = mapped(error(code, status), "upload a part")
        assert isinstance(exc, BackendUnavailable)
        assert code in str(exc) and "secret" not in str(exc)
    assert isinstance(mapped(OSError(28, "No space left on device"), "x"), StoreFull)


def test_more_than_10000_parts_is_store_full(store: S3Store) -> None:
    upload = Upload(store, "many", 30 * MiB)
    writer = store.writer(replace(upload.info), [], lambda: 10_001)
    try:
        writer.write([os.urandom(6 * MiB)])
        assert writer.sync() == 0
        assert isinstance(writer.failure, StoreFull)
        assert "10,000 parts" in str(writer.failure)
    finally:
        writer.close()


def test_a_removed_upload_with_only_a_tail_is_not_found(store: S3Store) -> None:
    upload = Upload(store, "gone", 10 * MiB)
    upload.put(os.urandom(MiB), piece=MiB)
    store.remove("gone")
    with contextlib.closing(upload.writer()) as writer, pytest.raises(FileNotFoundError):
        writer.write([b"late bytes"])


def test_back_pressure_and_scratch_files(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At most --s3-max-concurrent-parts parts of a writer in flight (write waits for a
    slot), so scratch files never exceed those plus the one being filled; none are left
    after sync or close, also with parts still in flight at close."""
    store = make_store(s3_max_concurrent_parts=2)
    in_flight, most, files = 0, 0, 0
    lock = threading.Lock()
    both = threading.Event()  # two parts were in flight at once
    original = store.upload_part

    def upload_part(*args: Any) -> str:
        nonlocal in_flight, most, files
        with lock:
            in_flight += 1
            most = max(most, in_flight)
            files = max(files, len(scratch_files(store)))
            if in_flight == 2:
                both.set()
        try:
            both.wait(10)
            return original(*args)
        finally:
            with lock:
                in_flight -= 1

    monkeypatch.setattr(store, "upload_part", upload_part)
    data = os.urandom(31 * MiB)
    upload = Upload(store, "bp", len(data) * 2)
    with contextlib.closing(upload.writer()) as writer:
        writer.write([data[i : i + MiB] for i in range(0, len(data), MiB)])
        upload.sync(writer)
    assert most == 2 and files <= 3
    assert scratch_files(store) == []
    writer = upload.writer()
    writer.write([data[i : i + MiB] for i in range(0, len(data), MiB)])
    writer.close()  # abandons the parts in flight without waiting
    drain(store)
    assert scratch_files(store) == []


@pytest.mark.parametrize("kind", ["crc32", "sha256", "md5"])
def test_part_checksums_are_sent(
    make_store: StoreFactory,
    s3: MotoServer,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    """Each part carries its checksum, computed while it was staged (moto echoes the
    x-amz-checksum-* ones), and CompleteMultipartUpload lists them."""
    store = make_store(s3_checksum=kind)
    sent = Spy(monkeypatch, store.client, "upload_part")
    completes = Spy(monkeypatch, store.client, "complete_multipart_upload")
    data = os.urandom(7 * MiB)
    upload = Upload(store, "sum", len(data))
    upload.put(data, piece=MiB)
    bodies = [data[: 5 * MiB], data[5 * MiB :]]
    for call, answer, body in zip(sent.calls, sent.answers, bodies, strict=True):
        if kind == "crc32":
            expected = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
            assert call["ChecksumCRC32"] == answer["ChecksumCRC32"] == expected
        elif kind == "sha256":
            expected = base64.b64encode(hashlib.sha256(body).digest()).decode()
            assert call["ChecksumSHA256"] == answer["ChecksumSHA256"] == expected
        else:
            assert call["ContentMD5"] == base64.b64encode(hashlib.md5(body).digest()).decode()
    listed = completes.calls[0]["MultipartUpload"]["Parts"]
    field = {"crc32": "ChecksumCRC32", "sha256": "ChecksumSHA256"}.get(kind)
    assert all((field in part) == (field is not None) for part in listed)
    assert s3.read(s3_bucket, PREFIX + "sum") == data


@pytest.mark.parametrize("url", ["http://s3.test/b/k", "https://s3.test/b/k"])
def test_signing_with_the_precomputed_sha256(url: str) -> None:
    """The signed payload hash is the one the store computed while staging the part, so
    botocore need not read the body again: over http the signature is the one botocore
    computes by reading it; over https with a checksum header the payload is unsigned (TLS
    and the checksum protect it)."""
    from botocore.auth import S3SigV4Auth

    body = os.urandom(100_000)
    crc = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()

    def signed(auth_class: Any, precomputed: str | None) -> dict[str, str]:
        request = AWSRequest("PUT", url, data=body, headers={"x-amz-checksum-crc32": crc})
        request.context.update(timestamp="20250101T000000Z", has_streaming_input=True)
        if precomputed:
            request.context[PAYLOAD_CONTEXT] = precomputed
        auth_class(Credentials("key", "secret"), "s3", "us-east-1").add_auth(request)
        return dict(request.headers)

    ours = signed(PrecomputedPayloadAuth, hashlib.sha256(body).hexdigest())
    if url.startswith("http:"):
        assert ours == signed(S3SigV4Auth, None)
        assert ours["X-Amz-Content-SHA256"] == hashlib.sha256(body).hexdigest()
        assert signed(PrecomputedPayloadAuth, "0" * 64)["X-Amz-Content-SHA256"] == "0" * 64
    else:
        assert ours["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"
    assert signs_payload("http://minio:9000", "crc32") and signs_payload("", "none")
    assert not signs_payload("", "crc32") and not signs_payload("https://r2", "md5")


@pytest.mark.parametrize("kind", ["crc32", "sha256", "none"])
def test_parts_are_read_once_to_be_sent(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Over plain http botocore would read each part again to sign it: the store hands it
    the hash it computed while staging (checked against botocore's own signature above)."""
    store = make_store(s3_checksum=kind)
    read_bytes = 0
    original = PartBody.read

    def counting(self: PartBody, size: int | None = -1) -> bytes:
        nonlocal read_bytes
        data = original(self, size)
        read_bytes += len(data)
        return data

    monkeypatch.setattr(PartBody, "read", counting)
    signed: list[str] = []
    store.client.meta.events.register(
        "before-send.s3.UploadPart",
        lambda request, **kwargs: signed.append(request.headers["X-Amz-Content-SHA256"].decode()),
    )
    data = os.urandom(7 * MiB)
    Upload(store, "once", len(data)).put(data, piece=MiB)
    assert read_bytes == len(data)
    assert signed == [
        hashlib.sha256(data[: 5 * MiB]).hexdigest(),
        hashlib.sha256(data[5 * MiB :]).hexdigest(),
    ]


def test_presigned_download(make_store: StoreFactory) -> None:
    import httpx

    plain = make_store("plain")
    store = make_store("presigning", s3_presigned_downloads=True)
    upload = Upload(store, "dl", 5)
    upload.put(b"hello")
    assert plain.download_url("dl") is None
    url = store.download_url("dl")
    assert url is not None and "X-Amz-Expires=600" in url
    assert httpx.get(url).content == b"hello"


def test_storage_info_and_check(store: S3Store, s3_bucket: str, tmp_path: Path) -> None:
    assert store.storage_info("u1") == {"Type": "s3store", "Bucket": s3_bucket, "Key": "up/u1"}
    assert store.local_path("u1") is None and store.free_space() is None
    store.check()
    missing = S3Store(replace(store.settings, s3_bucket="no-such-bucket"))
    try:
        with pytest.raises(BackendUnavailable, match=r"no-such-bucket .*no such bucket"):
            missing.check()
    finally:
        missing.close()
    store.scratch_dir = tmp_path / "not-a-directory"  # e.g. a lost mount: no scratch space
    store.scratch_dir.write_bytes(b"")
    with pytest.raises(BackendUnavailable, match="scratch directory"):
        store.check()
