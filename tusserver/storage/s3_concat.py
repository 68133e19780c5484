"""Concatenation in S3: a final upload assembled from finished partial uploads' objects
without passing their bytes through the server where S3 can copy them itself.

A partial of 5 MiB or more becomes parts copied inside S3 (UploadPartCopy, ranges of at most
5 GiB). Smaller ones, and the bytes needed to bring a pending piece up to S3's 5 MiB part
minimum, are copied through a scratch file (ranged GET, then UploadPart). Less than 5 MiB in
all is one PutObject. Parts are numbered 1..n: concatenation runs under the final upload's
lock, with a new multipart upload each attempt (aborted when the attempt fails).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tusserver.registry.base import Part, UploadInfo
from tusserver.storage.s3_common import (
    MAX_PART,
    MIN_PART,
    Scratch,
    delete_file,
    s3_call,
)

if TYPE_CHECKING:
    from tusserver.storage.s3 import S3Store


def concatenate(store: S3Store, final: UploadInfo, sources: Sequence[UploadInfo]) -> None:
    """Fill `final`'s object with the sources' objects, in order (FileNotFoundError if one
    is missing)."""
    key = store.key(final.id)
    pieces = [(store.key(source.id), source.length or 0) for source in sources]
    total = sum(length for _, length in pieces)
    for source_key, length in pieces:
        if not length and store.head_size(source_key) is None:
            raise FileNotFoundError(f"partial upload object {source_key} is missing")
    if total < MIN_PART:
        _put_small(store, final, key, pieces, total)
        return
    ref = store.create_multipart(key, final.metadata)
    try:
        parts = _Assembly(store, final.id, key, ref).run(pieces)
        store.complete(key, ref, parts)
    except BaseException:
        store.abort_quietly(key, ref)
        raise


def _put_small(
    store: S3Store, final: UploadInfo, key: str, pieces: list[tuple[str, int]], total: int
) -> None:
    """Less than a part in all: the bytes through one scratch file, one PutObject."""
    scratch = store.new_scratch(final.id, 0, max(total, 1))
    try:
        for source_key, length in pieces:
            if length:
                store.read_into(source_key, length, scratch)
        scratch.close_file()
        store.put_final(key, scratch if total else None, final.metadata)
    finally:
        scratch.discard()


class _Assembly:
    """Parts of one concatenation attempt, in order (see the module docstring)."""

    def __init__(self, store: S3Store, final_id: str, key: str, ref: str):
        self.store = store
        self.final_id = final_id
        self.key = key
        self.ref = ref
        self.parts: list[Part] = []
        self.pending: Scratch | None = None  # copied-through bytes not sent yet (< 5 MiB)

    def run(self, pieces: Sequence[tuple[str, int]]) -> list[Part]:
        try:
            for source_key, length in pieces:
                self._add(source_key, length)
            if self.pending is not None and self.pending.size:
                self._send_pending()
        finally:
            if self.pending is not None:
                self.pending.discard()
        return self.parts

    def _add(self, source_key: str, length: int) -> None:
        position = 0
        while position < length:
            rest = length - position
            pending = self.pending.size if self.pending is not None else 0
            if not pending and rest >= MIN_PART:
                self._copy(source_key, position, length)
                return
            # through the server: what the pending piece lacks to be a part, or the rest
            take = min(rest, MIN_PART - pending)
            scratch = self._pending()
            self.store.read_into(source_key, take, scratch, start=position)
            position += take
            if scratch.size >= MIN_PART:
                self._send_pending()

    def _copy(self, source_key: str, start: int, end: int) -> None:
        """Parts copied inside S3: [start, end) in ranges of at most 5 GiB (each at least
        5 MiB, as the range is)."""
        count = math.ceil((end - start) / MAX_PART)
        size = math.ceil((end - start) / count)
        for first in range(start, end, size):
            last = min(first + size, end)
            number = len(self.parts) + 1
            with s3_call("copy a partial upload", missing=True):
                answer = self.store.client.upload_part_copy(
                    Bucket=self.store.bucket,
                    Key=self.key,
                    UploadId=self.ref,
                    PartNumber=number,
                    CopySource={"Bucket": self.store.bucket, "Key": source_key},
                    CopySourceRange=f"bytes={first}-{last - 1}",
                )
            result = answer["CopyPartResult"]
            checksum = _copied_checksum(result, self.store.checksum_kind)
            self.parts.append(Part(number, str(result["ETag"]), last - first, checksum))

    def _pending(self) -> Scratch:
        if self.pending is None:
            self.pending = self.store.new_scratch(self.final_id, 0, MAX_PART)
        return self.pending

    def _send_pending(self) -> None:
        scratch, self.pending = self.pending, None
        assert scratch is not None
        scratch.close_file()
        number = len(self.parts) + 1
        checksum = scratch.checksum.value()
        try:
            etag = self.store.upload_part(
                self.key,
                self.ref,
                number,
                scratch.path,
                scratch.size,
                checksum,
                scratch.checksum.payload_sha256(),
            )
        finally:
            delete_file(scratch.path)
        self.parts.append(Part(number, etag, scratch.size, checksum))


def _copied_checksum(result: dict[str, str], kind: str) -> str | None:
    """The checksum S3 computed for a copied part (what CompleteMultipartUpload lists for a
    multipart upload with a checksum algorithm), as the store keeps checksums."""
    field = {"crc32": "ChecksumCRC32", "sha256": "ChecksumSHA256"}.get(kind)
    value = result.get(field) if field else None
    return f"{kind}:{value}" if value else None
