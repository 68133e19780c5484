"""What the S3 store's modules share: object keys, the one error mapping, part checksums,
part sizing, object headers from upload metadata, and the staging of bytes in scratch files.

Errors: every botocore exception leaves the store through `mapped` (or the `s3_call` block
around a call), so callers see only the server's exceptions (see tusserver/storage/base.py):
a missing object or multipart upload is FileNotFoundError where the caller asks for it; a
service that has no room (EntityTooLarge, a quota) is StoreFull (507); everything else
(throttling, 5xx, timeouts, refused connections, denied access, a missing bucket) is
BackendUnavailable (503), whose message names the operation and S3's error code, never a
server message or a credential. botocore's standard retry mode has already retried the
transient ones with backoff by then.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import http.client
import io
import logging
import math
import os
import secrets
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from botocore.exceptions import BotoCoreError, ClientError
from urllib3.exceptions import HTTPError as TransportError

from tusserver.errors import BackendUnavailable, StoreFull
from tusserver.protocol import is_valid_upload_id, safe_mime_type
from tusserver.storage.base import advance
from tusserver.storage.s3_signing import PAYLOAD_SHA256

log = logging.getLogger("tusserver.s3")

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

MAX_OBJECT = 5 * TiB  # S3's largest object
MAX_PARTS = 10_000  # S3's most parts per multipart upload
# Parts are sized for this many, so numbers stay for parts of interrupted requests (whose
# reserved numbers are never used again).
PLANNED_PARTS = 9_000
MIN_PART = 5 * MiB  # S3's smallest part (except the last)
MAX_PART = 5 * GiB  # S3's largest part (and largest single copy)

# Error codes that mean "no room", not "not reachable": 507, not 503.
FULL_CODES = frozenset(
    {
        "EntityTooLarge",
        "XMinioStorageFull",
        "XMinioAdminBucketQuotaExceeded",
        "QuotaExceeded",
        "StorageFull",
        "InsufficientStorage",
        "StorageQuotaExceeded",
    }
)
MISSING_CODES = frozenset({"NoSuchKey", "NotFound", "404", "NoSuchUpload"})


# -- errors -----------------------------------------------------------------------------------


def error_code(exc: ClientError) -> str:
    """S3's error code of a ClientError ("NoSuchKey", "SlowDown", "503", ...)."""
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


def mapped(exc: BaseException, what: str, *, missing: bool = False) -> BaseException:
    """The exception to raise instead of `exc` from the S3 operation `what` (the one mapping,
    see the module docstring). `missing`: a missing object or multipart upload is
    FileNotFoundError (else BackendUnavailable). The server's exceptions pass unchanged."""
    if isinstance(exc, (BackendUnavailable, StoreFull)):
        return exc
    if isinstance(exc, FileNotFoundError):
        return exc if missing else BackendUnavailable(f"{what}: {exc}")
    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        if missing and code in MISSING_CODES:
            return FileNotFoundError(errno.ENOENT, f"{what}: {code}")
        if code in FULL_CODES or status == 507:
            return StoreFull(errno.ENOSPC, f"S3 has no room ({what}: {code})")
        return BackendUnavailable(f"S3 {what} failed: {code} (HTTP {status})")
    if isinstance(exc, (BotoCoreError, TransportError, http.client.HTTPException)):
        # the class name only: some messages quote endpoints or request details
        return BackendUnavailable(f"S3 {what} failed: {type(exc).__name__}")
    if isinstance(exc, OSError):  # scratch files (or a socket error botocore let through)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return StoreFull(exc.errno, f"no space left for S3 scratch files ({what})")
        return BackendUnavailable(f"{what} failed: {exc.strerror or type(exc).__name__}")
    return exc


class s3_call:
    """`with s3_call("do x"):` raises what `mapped` makes of an exception of the block."""

    __slots__ = ("missing", "what")

    def __init__(self, what: str, *, missing: bool = False):
        self.what = what
        self.missing = missing

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, traceback: object) -> None:
        if exc is not None and isinstance(exc, Exception):
            replacement = mapped(exc, self.what, missing=self.missing)
            if replacement is not exc:
                raise replacement from exc


def is_missing(exc: BaseException) -> bool:
    """A ClientError saying the object or multipart upload does not exist."""
    return isinstance(exc, ClientError) and error_code(exc) in MISSING_CODES


# -- keys ---------------------------------------------------------------------------------------


def checked_id(upload_id: str) -> str:
    """The id, if it is a valid upload id (so `<prefix><id>.` never matches another upload's
    keys: ids have no dots); ValueError otherwise."""
    if not is_valid_upload_id(upload_id):
        raise ValueError(f"invalid upload id {upload_id!r}")
    return upload_id


def tail_key(key: str, start: int, end: int) -> str:
    """The object holding bytes [start, end) of the upload whose final object is `key`.

    The key names the range, so a stale writer can only ever write the same bytes to it (tus:
    the bytes at an offset never change), and a recorded offset always names a tail that
    exists (it is deleted only once a later offset was recorded)."""
    return f"{key}.tail-{start}-{end}"


# -- part sizes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartSizes:
    """How an upload is cut into parts: `preferred` is the size the stream is cut at,
    `minimum` the smallest part sent before the upload's end (a request's remainder below it
    becomes a tail object instead)."""

    preferred: int
    minimum: int


def part_sizes(length: int | None, max_size: int, preferred: int, minimum: int) -> PartSizes:
    """Sizes that fit an upload of `length` (or, deferred, of up to `max_size`) into S3's
    10,000 parts: every part but the last is at least ceil(length / 9,000).

    A deferred length without a max size could be anything up to 5 TiB; it gets the
    configured sizes (not 610 MiB parts for every such upload), so one that grows past
    10,000 parts of the preferred size fails there with StoreFull (507). Set --max-size, or
    a larger --s3-part-size, for uploads that big."""
    bound = length if length is not None else (max_size or None)
    need = math.ceil(bound / PLANNED_PARTS) if bound else 0
    need = min(need, MAX_PART)
    preferred = max(preferred, need, MIN_PART)
    return PartSizes(preferred=preferred, minimum=min(max(minimum, need, MIN_PART), preferred))


# -- checksums ----------------------------------------------------------------------------------

CHECKSUM_KINDS = ("crc32", "sha256", "md5", "none")


class Checksum:
    """A part's integrity checksum, updated with each piece as it is staged, so the data is
    never read a second time for it. `value()` is what the part record keeps
    ("crc32:<base64>"; `checksum_params` turns it into UploadPart/PutObject arguments).

    With `payload_hash` it also keeps the bytes' SHA-256 for the request signature (see
    s3_signing; with the sha256 kind that is the checksum itself)."""

    __slots__ = ("_crc", "_md5", "_sha256", "kind")

    def __init__(self, kind: str, payload_hash: bool = False):
        if kind not in CHECKSUM_KINDS:
            raise ValueError(f"unknown S3 checksum {kind!r}")
        self.kind = kind
        self._crc = 0
        self._md5: Any = hashlib.md5(usedforsecurity=False) if kind == "md5" else None
        self._sha256: Any = hashlib.sha256() if kind == "sha256" or payload_hash else None

    def update(self, data: bytes | memoryview) -> None:
        if self.kind == "crc32":
            self._crc = zlib.crc32(data, self._crc)
        elif self._md5 is not None:
            self._md5.update(data)
        if self._sha256 is not None:
            self._sha256.update(data)

    def value(self) -> str | None:
        if self.kind == "crc32":
            raw = self._crc.to_bytes(4, "big")
        elif self.kind == "md5":
            raw = self._md5.digest()
        elif self.kind == "sha256":
            raw = self._sha256.digest()
        else:
            return None
        return f"{self.kind}:{base64.b64encode(raw).decode('ascii')}"

    def payload_sha256(self) -> str | None:
        """The hex SHA-256 of the bytes, if it was kept."""
        return None if self._sha256 is None else str(self._sha256.hexdigest())


def checksum_params(value: str | None, payload_sha256: str | None = None) -> dict[str, str]:
    """UploadPart/PutObject arguments that send a checksum kept as "kind:base64", and hand
    the body's SHA-256 (hex) to the signer if it is known."""
    extra = {PAYLOAD_SHA256: payload_sha256} if payload_sha256 else {}
    return {**_checksum_arguments(value), **extra}


def _checksum_arguments(value: str | None) -> dict[str, str]:
    kind, _, digest = (value or "").partition(":")
    if kind == "crc32":
        return {"ChecksumAlgorithm": "CRC32", "ChecksumCRC32": digest}
    if kind == "sha256":
        return {"ChecksumAlgorithm": "SHA256", "ChecksumSHA256": digest}
    if kind == "md5":
        return {"ContentMD5": digest}
    return {}


def completed_part(number: int, etag: str, checksum: str | None) -> dict[str, Any]:
    """A part as CompleteMultipartUpload lists it (with its checksum where S3 wants one: a
    multipart upload created with a checksum algorithm)."""
    entry: dict[str, Any] = {"PartNumber": number, "ETag": etag}
    kind, _, digest = (checksum or "").partition(":")
    if kind == "crc32":
        entry["ChecksumCRC32"] = digest
    elif kind == "sha256":
        entry["ChecksumSHA256"] = digest
    return entry


def multipart_algorithm(kind: str) -> dict[str, str]:
    """CreateMultipartUpload's ChecksumAlgorithm for part checksums of `kind` (none for MD5,
    which is Content-MD5, a plain header every service knows)."""
    return {"crc32": {"ChecksumAlgorithm": "CRC32"}, "sha256": {"ChecksumAlgorithm": "SHA256"}}.get(
        kind, {}
    )


# -- object headers -----------------------------------------------------------------------------


def encryption_params(sse: str) -> dict[str, str]:
    """--s3-sse as S3 arguments: "AES256", "aws:kms", or "aws:kms:<key id or ARN>"."""
    if not sse:
        return {}
    if sse.startswith("aws:kms:"):
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": sse[len("aws:kms:") :]}
    return {"ServerSideEncryption": sse}


def object_headers(metadata: dict[str, str]) -> dict[str, str]:
    """ContentType and ContentDisposition of the finished object, from the upload's metadata
    (`filetype`/`type`, `filename`/`name`), so a download straight from the bucket (or a
    presigned URL) gets them too: only a plain media type; the file name reduced to its last
    path component without control characters or quotes, RFC 5987 `filename*` when it is
    not ASCII (S3 keeps headers in ASCII)."""
    headers: dict[str, str] = {}
    mime = safe_mime_type(metadata.get("filetype") or metadata.get("type"))
    if mime:
        headers["ContentType"] = mime
    name = metadata.get("filename") or metadata.get("name")
    if name:
        headers["ContentDisposition"] = content_disposition(name)
    return headers


def content_disposition(name: str) -> str:
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable() and ch not in '"')
    if not name:
        return "attachment"
    if name.isascii():
        return f'attachment; filename="{name}"'
    fallback = "".join(ch if ch.isascii() else "_" for ch in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


# -- scratch files ------------------------------------------------------------------------------

# A file body is sent in reads of this size (urllib3 would read 16 KiB at a time: 65,536
# socket sends and Python calls per GiB).
SEND_BLOCK = 1 * MiB
IOV_MAX = 1024


class Scratch:
    """Bytes [start, start + size) of an upload staged in a local file, with their checksum.

    Written with writev on a raw descriptor (no buffer copies in Python); read back only to
    be sent. ENOSPC is StoreFull."""

    def __init__(
        self,
        directory: Path,
        upload_id: str,
        start: int,
        limit: int,
        checksum: str,
        payload_hash: bool = False,
    ):
        self.path = directory / f"{upload_id}-{secrets.token_hex(8)}"
        self.start = start
        self.size = 0
        self.limit = limit  # a part is cut when the file holds this many bytes
        self.checksum = Checksum(checksum, payload_hash)
        with s3_call("create a scratch file"):
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    @property
    def end(self) -> int:
        return self.start + self.size

    @property
    def room(self) -> int:
        return self.limit - self.size

    def append(self, views: Sequence[memoryview]) -> None:
        """Append the views (already cut to fit) and fold them into the checksum."""
        for view in views:
            self.checksum.update(view)
        with s3_call("write a scratch file"):
            for start in range(0, len(views), IOV_MAX):
                pending = list(views[start : start + IOV_MAX])
                total = sum(len(v) for v in pending)
                while total:
                    written = os.writev(self._fd, pending)
                    total -= written
                    self.size += written
                    pending = advance(pending, written)

    def close_file(self) -> None:
        """No more appends (the file stays, to be sent)."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def discard(self) -> None:
        """Close and delete the file."""
        self.close_file()
        delete_file(self.path)


def delete_file(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not delete S3 scratch file %s: %s", path.name, exc.strerror)


class PartBody(io.FileIO):
    """A scratch file as a request body: seekable (botocore rewinds it to retry), and read in
    SEND_BLOCK pieces whatever size urllib3 asks for, so sending costs a few thousand calls
    per GiB, not 65,536."""

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and 0 <= size < SEND_BLOCK:
            size = SEND_BLOCK
        return super().read(size)
