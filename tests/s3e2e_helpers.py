"""What the end-to-end tests of the S3 store (tests/test_s3_e2e.py) look at in the bucket.

The object layout they check (README, "S3 store"): the finished upload is the object
`<prefix><id>`; while it is unfinished, its bytes are the parts of one open multipart upload
for that key, followed by tail objects `<prefix><id>.tail-<start>-<end>` holding the bytes
below the part minimum; once finished or removed, only the finished object (or nothing)
remains and no multipart upload is open.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable
from typing import Any

from conftest import ServerProcess, wait_for
from s3server import MotoServer

MiB = 1024 * 1024
TAIL = re.compile(r"\.tail-(\d+)-(\d+)$")


def s3_flags(s3: MotoServer, bucket: str, *extra: str, prefix: str = "") -> tuple[str, ...]:
    """Server flags for a store in `bucket` on the session's S3 server, 5 MiB parts (S3's
    minimum: small uploads still use several parts)."""
    flags = [
        "--s3-bucket",
        bucket,
        "--s3-endpoint",
        s3.endpoint,
        "--s3-region",
        "us-east-1",
        "--s3-force-path-style",
        "--s3-part-size",
        "5M",
    ]
    if prefix:
        flags += ["--s3-object-prefix", prefix]
    return (*flags, *extra)


def upload_id(location: str) -> str:
    return location.rsplit("/", 1)[1]


def on(server: ServerProcess, location: str) -> str:
    """The same upload URL on another instance (what a load balancer does)."""
    return server.url + upload_id(location)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def open_uploads(s3: MotoServer, bucket: str, key: str) -> list[dict[str, Any]]:
    """The open multipart uploads of exactly `key`."""
    return [u for u in s3.open_multipart_uploads(bucket, key) if u["Key"] == key]


def holding(s3: MotoServer, bucket: str, key: str, data: bytes) -> int | None:
    """How many leading bytes of `data` the bucket holds for the unfinished upload `key`:
    the parts of its one open multipart upload, then contiguous tail objects whose bytes
    are checked. None when the layout is not that (no finished object may exist yet; more
    than one multipart upload, tails that overlap, leave gaps or hold wrong bytes)."""
    client = s3.client()
    objects = s3.objects(bucket, key)
    if key in objects:
        return None
    uploads = open_uploads(s3, bucket, key)
    if len(uploads) > 1:
        return None
    held = 0
    if uploads:
        listed = client.list_parts(Bucket=bucket, Key=key, UploadId=uploads[0]["UploadId"])
        held = sum(part["Size"] for part in listed.get("Parts", []))
    tails = []
    for name, size in objects.items():
        match = TAIL.search(name)
        if match is None or name[: match.start()] != key:
            return None
        start, end = int(match[1]), int(match[2])
        if end - start != size:
            return None
        tails.append((start, end, name))
    for start, end, name in sorted(tails):
        if start != held or s3.read(bucket, name) != data[start:end]:
            return None
        held = end
    return held


def wait_holding(s3: MotoServer, bucket: str, key: str, data: bytes, offset: int) -> None:
    """Wait until the bucket holds exactly bytes 0..offset of the unfinished upload (a
    superseded tail object may be deleted just after the answer)."""
    seen: list[int | None] = []

    def held() -> bool:
        seen.append(holding(s3, bucket, key, data))
        return seen[-1] == offset

    try:
        wait_for(held, 10, f"bucket holding {offset} bytes of {key}")
    except AssertionError:
        raise AssertionError(
            f"bucket does not hold bytes 0..{offset} of {key} as parts + tails (last seen:"
            f" {seen[-1]}): objects {s3.objects(bucket, key)},"
            f" multipart uploads {open_uploads(s3, bucket, key)}"
        ) from None


def settle(condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Wait (with a deadline) until `condition` holds, without failing: the assertions
    after it say what is wrong. For effects that may trail the answer (a superseded tail
    object deleted in the background)."""
    with contextlib.suppress(AssertionError):
        wait_for(condition, timeout)


def assert_finished(s3: MotoServer, bucket: str, key: str, data: bytes) -> None:
    """Only the finished object remains for `key` (no tail object, no open multipart
    upload), and it is byte-identical with `data`."""
    settle(
        lambda: s3.objects(bucket, key) == {key: len(data)} and not open_uploads(s3, bucket, key)
    )
    objects = s3.objects(bucket, key)
    assert objects == {key: len(data)}, objects
    assert open_uploads(s3, bucket, key) == []
    assert sha(s3.read(bucket, key)) == sha(data), "the object differs from the data sent"


def assert_no_leftovers(s3: MotoServer, bucket: str) -> None:
    """Nothing in the whole bucket is unfinished: no open multipart upload, no tail."""
    settle(
        lambda: (
            not s3.open_multipart_uploads(bucket)
            and not any(TAIL.search(key) for key in s3.objects(bucket))
        )
    )
    assert s3.open_multipart_uploads(bucket) == []
    assert [key for key in s3.objects(bucket) if TAIL.search(key)] == []
