"""S3 store: upload data in any S3-compatible object storage, so instances keep no state.

Object layout (every key starts with --s3-object-prefix):

- `<prefix><id>`: the finished upload, assembled by CompleteMultipartUpload from the parts
  the registry recorded (or written with one PutObject: an upload that never needed a part,
  or a concatenation of less than 5 MiB). Content-Type and Content-Disposition come from the
  `filetype`/`filename` metadata.
- `<prefix><id>.tail-<start>-<end>`: bytes [start, end) of an unfinished upload after its
  last recorded part (a request's remainder below the part minimum), read back by the next
  writer, wherever it runs. Deleted once superseded, and all of them at finish or removal.
- an open multipart upload on `<prefix><id>` while the upload is unfinished; its id is the
  upload's `store_ref` in the registry.

Ids are [A-Za-z0-9_-]: `<prefix><id>.` never matches another upload's keys.

Durability: an offset is recorded only after S3 acknowledged every byte before it (completed
parts plus a tail object), so `204 Upload-Offset: N` means bytes 0..N are in the bucket.

One boto3 client (thread-safe) and one thread pool per store: writes run on the server's
worker threads, part uploads on the pool. Credentials come from the standard AWS chain and
are never logged (neither are the settings).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tusserver.config import Settings
from tusserver.errors import BackendUnavailable
from tusserver.protocol import is_valid_upload_id
from tusserver.registry.base import Part, UploadInfo
from tusserver.storage.base import READ_CHUNK, Reader, Reserve, Store
from tusserver.storage.s3_common import (
    MAX_OBJECT,
    PartBody,
    PartSizes,
    Scratch,
    checked_id,
    checksum_params,
    completed_part,
    delete_file,
    encryption_params,
    error_code,
    is_missing,
    log,
    mapped,
    multipart_algorithm,
    object_headers,
    part_sizes,
    s3_call,
)
from tusserver.storage.s3_signing import install_precomputed_payload_hash, signs_payload
from tusserver.storage.s3_writer import S3Writer

# Part uploads, copies and background deletions of every writer of the process.
POOL_THREADS = 64
PRESIGNED_SECONDS = 600
# The ids this server makes (TusCore.new_id): what the orphan sweep touches without a prefix.
GENERATED_ID = re.compile(r"[0-9a-f]{32}")
# Retries of a broken download stream, from where it broke (seconds to wait before each).
RESUME_DELAYS = (0.0, 0.5, 2.0)
# Scratch files older than this at start-up were left by a crash (parts never take that long).
STALE_SCRATCH_SECONDS = 86400
DELETE_BATCH = 1000  # DeleteObjects' limit


def new_session() -> Any:
    """A boto3 session (credentials: the standard AWS chain) sharing the process's parsed
    service models: each session would otherwise parse them again (~0.1 s of CPU)."""
    core = botocore.session.Session()
    core.register_component("data_loader", _shared_loader())
    return boto3.session.Session(botocore_session=core)


@functools.cache
def _shared_loader() -> Any:
    return botocore.session.Session().get_component("data_loader")


# Attempts per S3 call (botocore's standard retry mode: exponential backoff with jitter).
DEFAULT_ATTEMPTS = 5


def make_client(
    settings: Settings,
    session: Any,
    *,
    connect_timeout: float = 5,
    read_timeout: float = 60,
    attempts: int | None = None,
) -> Any:
    """A boto3 S3 client for the settings.

    Checksums only when an operation requires them: the store sends its own, computed while
    the bytes were staged, instead of botocore reading every part again for one."""
    config = Config(
        # SigV4 for presigned URLs too (botocore would presign with the legacy SigV2)
        signature_version="s3v4",
        s3={"addressing_style": "path" if settings.s3_force_path_style else "auto"},
        retries={"mode": "standard", **_attempts(attempts)},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=POOL_THREADS,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    client = session.client(
        "s3",
        endpoint_url=settings.s3_endpoint or None,
        region_name=settings.s3_region or None,
        config=config,
    )
    install_precomputed_payload_hash(client)
    return client


def _attempts(attempts: int | None) -> dict[str, int]:
    """`attempts` when given; else AWS_MAX_ATTEMPTS (the AWS configuration's own knob, read
    by botocore) when set, else DEFAULT_ATTEMPTS."""
    if attempts is None and "AWS_MAX_ATTEMPTS" in os.environ:
        return {}
    return {"max_attempts": attempts or DEFAULT_ATTEMPTS}


class S3Store(Store):
    """Uploads as S3 objects (see the module docstring)."""

    kind = "s3store"
    can_concat = True
    needs_finish = True
    keeps_parts = True
    creates_data = False  # create() makes nothing: a taken id is found by the registry

    def __init__(self, settings: Settings):
        self.settings = settings
        self.bucket = settings.s3_bucket
        self.prefix = settings.s3_object_prefix
        self.checksum_kind = settings.s3_checksum
        # hash each part for the request signature while staging it (see s3_signing)
        self.payload_hash = signs_payload(settings.s3_endpoint, settings.s3_checksum)
        self.max_concurrent_parts = settings.s3_max_concurrent_parts
        self.scratch_dir = Path(settings.upload_dir) / ".s3-scratch"
        with s3_call("create the S3 scratch directory"):
            self.scratch_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_scratch(self.scratch_dir)
        self._encryption = encryption_params(settings.s3_sse)
        self._storage_class = (
            {"StorageClass": settings.s3_storage_class} if settings.s3_storage_class else {}
        )
        self._session = new_session()
        self.client = make_client(settings, self._session)
        self.pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="tusserver-s3")
        self._health: Any = None
        self._health_lock = threading.Lock()

    def close(self) -> None:
        """Stop the thread pool (tests; a server process simply exits)."""
        self.pool.shutdown(wait=False)

    # -- keys and sizes --------------------------------------------------------------------------

    def key(self, upload_id: str) -> str:
        """The finished object's key (ValueError for an invalid id)."""
        return self.prefix + checked_id(upload_id)

    def part_sizes(self, length: int | None) -> PartSizes:
        """Preferred and minimum part size of an upload of `length` (see part_sizes)."""
        s = self.settings
        return part_sizes(length, s.max_size, s.s3_part_size, s.s3_min_part_size)

    def max_object_size(self) -> int:
        """S3's largest object: a longer upload can never fit (413 at creation)."""
        return MAX_OBJECT

    def local_path(self, upload_id: str) -> None:
        """No local file: the bytes are in S3 (ValueError for an invalid id)."""
        checked_id(upload_id)
        return None

    def storage_info(self, upload_id: str) -> dict[str, str]:
        """tusd's hook schema for S3."""
        return {"Type": self.kind, "Bucket": self.bucket, "Key": self.key(upload_id)}

    # -- uploads ---------------------------------------------------------------------------------

    def create(self, upload_id: str) -> None:
        """Nothing in S3 yet: the multipart upload starts with the first part, and an upload
        that never needs one ends as a single PutObject. (A taken id is found by the
        registry, which records uploads.)"""
        checked_id(upload_id)

    def writer(
        self, info: UploadInfo, parts: Sequence[Part] = (), reserve: Reserve | None = None
    ) -> S3Writer:
        """A writer at the recorded offset (no network round trip: a removed upload is found
        by the first write, see S3Writer)."""
        checked_id(info.id)
        return S3Writer(self, info, parts, reserve)

    def reader(
        self, upload_id: str, start: int = 0, end: int | None = None, chunk: int = READ_CHUNK
    ) -> S3Reader:
        if start < 0 or (end is not None and end < start) or chunk <= 0:
            raise ValueError(f"invalid read of {start}..{end} in chunks of {chunk}")
        return S3Reader(self, self.key(upload_id), start, end, chunk)

    def size(self, upload_id: str) -> int:
        """The finished object's size (0 while unfinished or missing)."""
        return self.head_size(self.key(upload_id)) or 0

    def finish(self, info: UploadInfo, parts: Sequence[Part]) -> None:
        """Assemble the recorded parts into the final object, then delete the upload's tail
        objects and abort its other multipart uploads (stale writers'). Idempotent: a
        multipart upload completed before is recognised by the final object's size; with no
        parts the final object must exist already (one PutObject, a concatenation), except
        for an empty upload, which gets one now."""
        key = self.key(info.id)
        if parts:
            self._complete_recorded(info, key, parts)
        elif self.head_size(key) is None:
            if info.length:
                raise FileNotFoundError(f"upload {info.id}: its S3 object is missing")
            self.put_final(key, None, info.metadata)
        self._delete_prefixed(key + ".")
        self._abort_all(key)

    def _complete_recorded(self, info: UploadInfo, key: str, parts: Sequence[Part]) -> None:
        total = sum(part.size for part in parts)
        if info.length is not None and total != info.length:
            raise ValueError(f"upload {info.id}: parts hold {total} bytes of {info.length}")
        if info.store_ref is None:
            raise ValueError(f"upload {info.id} has parts but no multipart upload id")
        try:
            self.complete(key, info.store_ref, parts)
        except FileNotFoundError:
            if self.head_size(key) != total:  # not completed before: the parts are gone
                raise

    def concat(self, final: UploadInfo, sources: Sequence[UploadInfo]) -> None:
        from tusserver.storage.s3_concat import concatenate

        concatenate(self, final, sources)

    def remove(self, upload_id: str) -> None:
        """Abort the upload's multipart uploads, delete its object and tails (idempotent)."""
        key = self.key(upload_id)
        self._abort_all(key)
        with s3_call("delete an upload"):
            self.client.delete_object(Bucket=self.bucket, Key=key)
        self._delete_prefixed(key + ".")

    def strays(self, older_than: float) -> list[tuple[str, str]]:
        """Open multipart uploads under the prefix started more than `older_than` seconds
        ago, as (key without the prefix, upload id). Only keys that can be upload ids; and
        without a prefix (the bucket may hold other things) only keys shaped like the ids
        this server makes: another tool's multipart upload is never touched."""
        cutoff = datetime.now(UTC).timestamp() - older_than
        found = []
        for upload in self._multipart_uploads(self.prefix):
            name = upload["Key"][len(self.prefix) :]
            ours = GENERATED_ID.fullmatch(name) if not self.prefix else is_valid_upload_id(name)
            if ours and upload["Initiated"].timestamp() < cutoff:
                found.append((name, upload["UploadId"]))
        return found

    def abort(self, upload_id: str, ref: str) -> None:
        """Abort one multipart upload (`upload_id` as `strays` found it: anything under the
        prefix); one that is gone already is fine."""
        try:
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=self.prefix + upload_id, UploadId=ref
            )
        except Exception as exc:
            if not is_missing(exc):
                raise mapped(exc, "abort a multipart upload") from exc

    def download_url(self, upload_id: str) -> str | None:
        """With --s3-presigned-downloads: a GetObject URL valid for 10 minutes (signed
        locally, no request)."""
        if not self.settings.s3_presigned_downloads:
            return None
        with s3_call("presign a download"):
            url: str = self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self.key(upload_id)},
                ExpiresIn=PRESIGNED_SECONDS,
            )
        return url

    def check(self) -> None:
        """The bucket answers (HeadBucket, short timeout, no retries) and the scratch
        directory takes files; BackendUnavailable otherwise."""
        try:
            self._health_client().head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            detail = error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
            detail = {"404": "no such bucket (404)", "403": "access denied (403)"}.get(
                detail, detail
            )
            raise BackendUnavailable(f"S3 bucket {self.bucket} is not reachable: {detail}") from exc
        probe = self.scratch_dir / f".health-{secrets.token_hex(6)}"
        try:
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise BackendUnavailable(
                f"S3 scratch directory {self.scratch_dir} is not writable: {exc.strerror}"
            ) from exc

    def _health_client(self) -> Any:
        with self._health_lock:
            if self._health is None:
                self._health = make_client(
                    self.settings, self._session, connect_timeout=2, read_timeout=5, attempts=1
                )
            return self._health

    # -- S3 calls the writer, reader and concatenation share ---------------------------------------

    def object_params(self, metadata: dict[str, str] | None) -> dict[str, str]:
        """Arguments of a new object: encryption always; headers and storage class for a
        final object (`metadata` given), not for tails (temporary: a storage class with a
        minimum billed duration or size would only cost more)."""
        if metadata is None:
            return dict(self._encryption)
        return {**object_headers(metadata), **self._storage_class, **self._encryption}

    def create_multipart(self, key: str, metadata: dict[str, str]) -> str:
        with s3_call("start a multipart upload"):
            answer = self.client.create_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                **self.object_params(metadata),
                **multipart_algorithm(self.checksum_kind),
            )
        return str(answer["UploadId"])

    def new_scratch(self, upload_id: str, start: int, limit: int) -> Scratch:
        """A scratch file for bytes from `start` on, cut into a part at `limit` bytes."""
        return Scratch(
            self.scratch_dir, upload_id, start, limit, self.checksum_kind, self.payload_hash
        )

    def upload_part(
        self,
        key: str,
        ref: str,
        number: int,
        path: Path,
        size: int,
        checksum: str | None,
        payload_sha256: str | None = None,
    ) -> str:
        """Send a staged part; returns its ETag (FileNotFoundError: no such multipart
        upload, the upload was removed)."""
        with s3_call("upload a part", missing=True), PartBody(path) as body:
            answer = self.client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=ref,
                PartNumber=number,
                Body=body,
                ContentLength=size,
                **checksum_params(checksum, payload_sha256),
            )
        return str(answer["ETag"])

    def put_final(self, key: str, scratch: Scratch | None, metadata: dict[str, str]) -> None:
        """The whole upload as one object (None: an empty one)."""
        self._put(key, scratch, self.object_params(metadata), "store an upload")

    def put_tail(self, key: str, scratch: Scratch) -> None:
        self._put(key, scratch, self.object_params(None), "store the end of an upload")

    def _put(self, key: str, scratch: Scratch | None, params: dict[str, str], what: str) -> None:
        with s3_call(what):
            if scratch is None:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=b"", **params)
                return
            with PartBody(scratch.path) as body:
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=body,
                    ContentLength=scratch.size,
                    **checksum_params(scratch.checksum.value(), scratch.checksum.payload_sha256()),
                    **params,
                )

    def read_into(self, key: str, length: int, scratch: Scratch, start: int = 0) -> None:
        """Append bytes [start, start + length) of an object to a scratch file, streamed
        (FileNotFoundError if the object is gone or shorter)."""
        with S3Reader(self, key, start, start + length, READ_CHUNK) as reader:
            for data in reader:
                scratch.append([memoryview(data)])
                length -= len(data)
        if length:
            raise FileNotFoundError(f"S3 object {key} is shorter than recorded")

    def complete(self, key: str, ref: str, parts: Sequence[Part]) -> None:
        """CompleteMultipartUpload (FileNotFoundError: no such multipart upload)."""
        with s3_call("complete a multipart upload", missing=True):
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=ref,
                MultipartUpload={
                    "Parts": [completed_part(p.number, p.etag, p.checksum) for p in parts]
                },
            )

    def head_size(self, key: str) -> int | None:
        """An object's size, None if it does not exist."""
        try:
            answer = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if is_missing(exc):
                return None
            raise mapped(exc, "look up an object") from exc
        return int(answer["ContentLength"])

    def delete_later(self, key: str) -> None:
        """Delete an object on the pool, best effort (called on the event loop)."""
        with contextlib.suppress(RuntimeError):  # the pool is shut down
            self.pool.submit(self._delete_quietly, key)

    def _delete_quietly(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            log.warning("could not delete superseded S3 object %s: %s", key, mapped(exc, "delete"))

    def abort_quietly(self, key: str, ref: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=ref)
        except Exception as exc:
            if not is_missing(exc):
                log.warning("could not abort multipart upload of %s: %s", key, mapped(exc, "abort"))

    def _delete_prefixed(self, prefix: str) -> None:
        """Delete every object whose key starts with `prefix`."""
        with s3_call("delete an upload's objects"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
            for first in range(0, len(keys), DELETE_BATCH):
                batch = keys[first : first + DELETE_BATCH]
                self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )

    def _abort_all(self, key: str) -> None:
        """Abort every open multipart upload of exactly `key` (one gone already is fine)."""
        for upload in self._multipart_uploads(key):
            if upload["Key"] == key:
                self.abort(key[len(self.prefix) :], upload["UploadId"])

    def _multipart_uploads(self, prefix: str) -> Iterator[dict[str, Any]]:
        with s3_call("list multipart uploads"):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            uploads = [upload for page in pages for upload in page.get("Uploads", [])]
        return iter(uploads)


class S3Reader(Reader):
    """A byte range of an object in one streaming GET (Range only when not the whole
    object), in chunks of at most `chunk` bytes. A stream that breaks is resumed with a
    ranged GET from where it broke (a few attempts, with backoff), pinned to the object's
    ETag: processing reads multi-GB files in one pass and must not fail on a hiccup."""

    def __init__(self, store: S3Store, key: str, start: int, end: int | None, chunk: int):
        self._store = store
        self._key = key
        self._position = start
        self._end = end
        self._chunk = chunk
        self._body: Any = None
        self._remaining = 0
        self._etag: str | None = None
        self._closed = False
        if end is not None and end <= start:  # an empty range: the object must exist still
            if store.head_size(key) is None:
                raise FileNotFoundError(f"S3 object {key} not found")
            return
        self._open()

    def _open(self) -> None:
        params: dict[str, Any] = {"Bucket": self._store.bucket, "Key": self._key}
        if self._position or self._end is not None:
            last = "" if self._end is None else str(self._end - 1)
            params["Range"] = f"bytes={self._position}-{last}"
        if self._etag is not None:
            params["IfMatch"] = self._etag
        try:
            answer = self._store.client.get_object(**params)
        except ClientError as exc:
            if error_code(exc) == "InvalidRange":  # starts at or past the end: nothing left
                self._remaining = 0
                return
            raise mapped(exc, "read an upload", missing=True) from exc
        except Exception as exc:
            raise mapped(exc, "read an upload") from exc
        self._body = answer["Body"]
        self._remaining = int(answer["ContentLength"])
        self._etag = answer.get("ETag")

    def __iter__(self) -> Iterator[bytes]:
        failures = 0
        while self._remaining > 0:
            if self._closed:
                raise ValueError("read from a closed reader")
            try:
                data = self._body.read(min(self._chunk, self._remaining))
                error: Exception | None = None
            except Exception as exc:  # a broken stream: urllib3 or botocore errors, OSError
                data, error = b"", exc
            if not data:
                failures += 1
                self._resume(failures, error)
                continue
            failures = 0
            self._position += len(data)
            self._remaining -= len(data)
            yield data
        self._close_body()

    def _resume(self, failures: int, error: Exception | None) -> None:
        """Open the stream again at the current position, or give up after the last
        attempt (BackendUnavailable: the client or job retries later)."""
        self._close_body()
        while True:
            if failures > len(RESUME_DELAYS):
                cause = error or ConnectionError("stream ended early")
                raise mapped(cause, "read an upload") from error
            time.sleep(RESUME_DELAYS[failures - 1])
            log.warning(
                "S3 download of %s broke at byte %d (%s); resuming",
                self._key,
                self._position,
                type(error).__name__ if error else "ended early",
            )
            try:
                self._open()
                return
            except BackendUnavailable as exc:
                error = exc
                failures += 1

    def _close_body(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            with contextlib.suppress(Exception):
                body.close()

    def close(self) -> None:
        self._closed = True
        self._close_body()


def _remove_stale_scratch(directory: Path) -> None:
    """Scratch files a crashed process left behind (live ones are minutes old at most)."""
    cutoff = time.time() - STALE_SCRATCH_SECONDS
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            with contextlib.suppress(OSError):
                if entry.is_file() and entry.stat().st_mtime < cutoff:
                    delete_file(Path(entry.path))
