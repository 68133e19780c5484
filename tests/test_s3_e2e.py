"""The S3 store end to end (issue: "S3 store"): real `tusserver` processes on the session's
S3-compatible server (moto, tests/s3server.py), two instances sharing it and one PostgreSQL
database with separate scratch dirs, real clients (tuspy, tus-js-client under Node).

Every test checks the bucket itself, not only what the server answers: the finished object
`<prefix><id>` is byte-identical with what was sent, no multipart upload stays open and no
tail object is left (tests/s3e2e_helpers.py says what the layout is). Part size is S3's
minimum (5 MiB) so that a few MiB already make several parts.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
import pytest
from conftest import (
    TUS,
    ServerProcess,
    create_upload,
    free_port,
    patch,
    s3_settings,
    wait_for,
    wait_receiving,
)
from inprocess import OCTET, serving
from rawclient import patch_request
from s3e2e_helpers import (
    MiB,
    assert_finished,
    assert_no_leftovers,
    holding,
    on,
    open_uploads,
    s3_flags,
    sha,
    upload_id,
    wait_holding,
)
from s3server import MotoServer
from test_hooks import HookBox
from test_interop_node import last, run_node
from test_interop_node import node_client as node_client  # the fixture (npm ci if needed)
from test_processing import final_status, status, tuspy_upload
from tusclient import client as tus_client

from tusserver import upkeep


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def pair(make_server, pg_url, s3, s3_bucket) -> tuple[ServerProcess, ServerProcess]:
    """Two instances on one bucket and one PostgreSQL database, each with its own scratch
    dir (make_server gives every server a directory of its own)."""
    flags = s3_flags(s3, s3_bucket, "--db", pg_url)
    return make_server(*flags), make_server(*flags)


# -- two instances -------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [3 * MiB, 8 * MiB], ids=["3MiB-chunks", "8MiB-chunks"])
def test_tuspy_chunks_alternate_between_instances(pair, s3, s3_bucket, client, chunk):
    """tuspy sends each chunk to the other instance. Chunks of 3 MiB are below the part
    minimum (every PATCH ends in a tail object the next instance must pick up); 8 MiB make
    a part and a tail. After every chunk both instances report the same offset and the
    bucket holds exactly those bytes as parts + tails; at the end only the object remains,
    byte-identical."""
    data = os.urandom(20 * MiB + 4321)
    up = tus_client.TusClient(pair[0].url).uploader(
        file_stream=io.BytesIO(data), chunk_size=chunk, retries=0, metadata={"filename": "a.bin"}
    )
    location = up.create_url()
    key = upload_id(location)
    turn = 0
    while up.offset < len(data):
        up.set_url(on(pair[turn % 2], location))
        before = up.offset
        up.upload_chunk()
        assert up.offset == min(before + chunk, len(data)), "a 204 acknowledges the whole chunk"
        for server in pair:
            head = client.head(on(server, location), headers=TUS)
            assert head.status_code == 200
            assert head.headers["Upload-Offset"] == str(up.offset)
            assert head.headers["Upload-Length"] == str(len(data))
        if up.offset < len(data):
            wait_holding(s3, s3_bucket, key, data, up.offset)
        turn += 1
    assert turn == -(-len(data) // chunk)
    assert_finished(s3, s3_bucket, key, data)
    assert_no_leftovers(s3, s3_bucket)
    for server in pair:
        assert sha(client.get(on(server, location)).content) == sha(data)


@pytest.mark.parametrize("tail", [0, 3 * MiB], ids=["fresh", "after-a-tail"])
def test_interrupted_patch_keeps_at_most_what_was_sent(pair, s3, s3_bucket, client, tail):
    """A PATCH on B whose client disconnects after 7 MiB of a longer body (on a fresh
    upload, or after a 3 MiB tail from A): the offset reported (on A) is between what was
    recorded before and what was sent, the bucket holds exactly those bytes, and the client
    resumes from there on A."""
    a, b = pair
    data = os.urandom(14 * MiB + 77)
    location = create_upload(client, a.url, len(data))
    key = upload_id(location)
    if tail:
        assert patch(client, location, 0, data[:tail]).status_code == 204
    sent = tail + 7 * MiB
    request = patch_request(b.port, "/files/" + key, tail, len(data) - tail)
    try:
        for start in range(tail, sent, 256 * 1024):
            assert request.send(data[start : start + 256 * 1024])
        wait_receiving(b)
    finally:
        request.close()  # the client goes away mid-body
    head = client.head(on(a, location), headers=TUS)
    assert head.status_code == 200
    offset = int(head.headers["Upload-Offset"])
    assert tail <= offset <= sent
    assert int(client.head(on(b, location), headers=TUS).headers["Upload-Offset"]) == offset
    wait_holding(s3, s3_bucket, key, data, offset)
    response = patch(client, on(a, location), offset, data[offset:])
    assert response.status_code == 204, response.text
    assert response.headers["Upload-Offset"] == str(len(data))
    assert_finished(s3, s3_bucket, key, data)
    assert_no_leftovers(s3, s3_bucket)


def test_stalled_patch_on_a_is_taken_over_by_head_on_b(pair, s3, s3_bucket, client):
    """A PATCH on A whose client went silent after 12 MiB (two parts and a bit): a HEAD on
    B asks A to let go; A makes what it received durable (parts, then a tail object) and B
    answers with that offset; the client finishes on B."""
    a, b = pair
    data = os.urandom(20 * MiB)
    location = create_upload(client, a.url, len(data))
    key = upload_id(location)
    stale = patch_request(a.port, "/files/" + key, 0, len(data))
    try:
        for start in range(0, 12 * MiB, 256 * 1024):
            assert stale.send(data[start : start + 256 * 1024])
        wait_receiving(a)
        head = client.head(on(b, location), headers=TUS)
        assert head.status_code == 200
        kept = int(head.headers["Upload-Offset"])
        # what A had read off the socket when asked: some may still be in socket buffers
        assert 0 < kept <= 12 * MiB
        wait_holding(s3, s3_bucket, key, data, kept)
        response = patch(client, on(b, location), kept, data[kept:])
        assert response.status_code == 204, response.text
    finally:
        stale.close()
    assert_finished(s3, s3_bucket, key, data)
    assert_no_leftovers(s3, s3_bucket)


@pytest.mark.parametrize("body", ["streaming", "stalled"])
def test_kill9_mid_patch_resumes_on_the_other_instance(pair, s3, s3_bucket, client, body):
    """A dies with SIGKILL in the middle of a body; B takes over: HEAD on B, PATCH the rest
    there. The object is byte-identical and no multipart upload is left open.

    streaming: the body keeps trickling in until A's checkpoint recorded its first part
    (and so its multipart upload), then A dies: B goes on from there with A's multipart
    upload. stalled: the client goes silent once A sent its first part to S3 (no
    checkpoint runs without new bytes, so maybe nothing of it is recorded), then A dies: B
    goes on from what was recorded, and A's unrecorded multipart upload must not stay open."""
    a, b = pair
    data = os.urandom(16 * MiB + 999)
    location = create_upload(client, a.url, len(data))
    key = upload_id(location)
    request = patch_request(a.port, "/files/" + key, 0, len(data))
    sent = 0

    def send(size: int) -> None:
        nonlocal sent
        assert request.send(data[sent : sent + size])
        sent += size

    try:
        for _ in range(24):  # 6 MiB: one part and a bit
            send(256 * 1024)
        wait_receiving(a)
        if body == "streaming":

            def first_part_recorded() -> bool:
                if sent < 9 * MiB:  # below the second part: the kill lands mid-body
                    send(16 * 1024)
                # /status reads the registry without taking the upload from A
                return bool(status(on(b, location))["upload"]["offset"] >= 5 * MiB)

            wait_for(first_part_recorded, 20, "A recording its first part (checkpoint)")
        else:
            wait_for(lambda: open_uploads(s3, s3_bucket, key), 20, "A sending its first part")
        a.kill()
    finally:
        request.close()
    head = client.head(on(b, location), headers=TUS)
    assert head.status_code == 200
    offset = int(head.headers["Upload-Offset"])
    assert offset <= sent
    if body == "streaming":
        assert offset >= 5 * MiB
        wait_holding(s3, s3_bucket, key, data, offset)
    response = patch(client, on(b, location), offset, data[offset:])
    assert response.status_code == 204, response.text
    assert response.headers["Upload-Offset"] == str(len(data))
    assert_finished(s3, s3_bucket, key, data)
    assert_no_leftovers(s3, s3_bucket)
    assert sha(client.get(on(b, location)).content) == sha(data)


@pytest.mark.parametrize("last", [100, 0], ids=["with-the-last-bytes", "in-an-empty-patch"])
@pytest.mark.parametrize("first", [MiB, 7 * MiB], ids=["tail-only", "part-and-tail"])
def test_deferred_length_declared_at_the_end(make_server, s3, s3_bucket, client, first, last):
    """creation-defer-length: the length comes with the last PATCH, with its last bytes or
    in an empty PATCH once every byte was sent ("the Client MUST set the Upload-Length
    header in the next PATCH request, once the length is known"). Either way the bytes held
    as parts and a tail become the finished object."""
    server = make_server(*s3_flags(s3, s3_bucket))
    data = os.urandom(first + last)
    location = create_upload(client, server.url, None)
    assert patch(client, location, 0, data[:first]).status_code == 204
    wait_holding(s3, s3_bucket, upload_id(location), data, first)
    response = patch(client, location, first, data[first:], **{"Upload-Length": str(len(data))})
    assert response.status_code == 204, f"{response.status_code} {response.text}"
    assert response.headers["Upload-Offset"] == str(len(data))
    head = client.head(location, headers=TUS)
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(len(data))
    assert_finished(s3, s3_bucket, upload_id(location), data)
    assert_no_leftovers(s3, s3_bucket)
    assert sha(client.get(location).content) == sha(data)


def test_checksum_mismatch_after_a_tail_discards_the_chunk(make_server, s3, s3_bucket, client):
    """A chunk whose Upload-Checksum does not match (460) is discarded: the offset and the
    bucket's tail object are the 3 MiB from before (the part the rejected chunk sent is not
    recorded), and the chunk sent again with the right checksum finishes the upload, with
    no multipart upload left open."""
    server = make_server(*s3_flags(s3, s3_bucket))
    data = os.urandom(9 * MiB)
    location = create_upload(client, server.url, len(data))
    key = upload_id(location)
    assert patch(client, location, 0, data[: 3 * MiB]).status_code == 204
    rest = data[3 * MiB :]
    wrong = base64.b64encode(hashlib.sha1(rest[1:]).digest()).decode()
    rejected = patch(client, location, 3 * MiB, rest, **{"Upload-Checksum": "sha1 " + wrong})
    assert rejected.status_code == 460
    assert client.head(location, headers=TUS).headers["Upload-Offset"] == str(3 * MiB)
    # the recorded tail stands (a multipart upload the rejected chunk opened may stay open
    # until the upload finishes or is removed: it is not recorded, nothing relies on it)
    tail = f"{key}.tail-0-{3 * MiB}"
    assert s3.objects(s3_bucket, key) == {tail: 3 * MiB}
    assert s3.read(s3_bucket, tail) == data[: 3 * MiB]
    right = base64.b64encode(hashlib.sha1(rest).digest()).decode()
    accepted = patch(client, location, 3 * MiB, rest, **{"Upload-Checksum": "sha1 " + right})
    assert accepted.status_code == 204
    assert_finished(s3, s3_bucket, key, data)
    assert_no_leftovers(s3, s3_bucket)


# -- tus-js-client -----------------------------------------------------------------------

NODE_CASES = {
    # partials of 6 MiB: the final object is assembled with UploadPartCopy
    "parallel-24MiB": (24 * MiB + 12345, {"parallelUploads": 4}),
    # partials of 256 KiB, below the part minimum: copied through
    "parallel-1MiB": (MiB + 333, {"parallelUploads": 4}),
    # tus-js-client's common setting: every PATCH is below the part minimum
    "chunks-1MiB": (12 * MiB + 77, {"chunkSize": MiB}),
}


@pytest.mark.parametrize("case", list(NODE_CASES))
def test_tus_js_client(make_server, s3, s3_bucket, client, node_client, tmp_path, case):
    size, options = NODE_CASES[case]
    data = os.urandom(size)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    server = make_server(*s3_flags(s3, s3_bucket, prefix="js/"))
    events = run_node(
        node_client, endpoint=server.url, file=str(path), metadata={"filename": "d.bin"}, **options
    )
    url = str(last(events, "success")["url"])
    head = client.head(url, headers=TUS)
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(size)
    if "parallelUploads" in options:
        kind, _, partials = head.headers["Upload-Concat"].partition(";")
        assert kind == "final" and len(partials.split()) == 4
        position = 0
        for partial in partials.split():
            part_key = "js/" + upload_id(partial)
            length = int(client.head(partial, headers=TUS).headers["Upload-Length"])
            assert (length >= 5 * MiB) == (size > 5 * 4 * MiB)  # the path this case means
            assert_finished(s3, s3_bucket, part_key, data[position : position + length])
            position += length
        assert position == size
    assert_finished(s3, s3_bucket, "js/" + upload_id(url), data)
    assert_no_leftovers(s3, s3_bucket)
    assert sha(client.get(url).content) == sha(data)


def test_concatenation_of_mixed_partials_across_instances(pair, s3, s3_bucket, client):
    """Partials of 5 MiB and more (copied inside S3), smaller ones between them and an
    empty one (copied through, topping a piece up to the part minimum), the final created
    on A while the last partial is unfinished (concatenation-unfinished) and completed on
    B: the final object is the partials' bytes in order; the partials' objects stay."""
    a, b = pair
    sizes = [6 * MiB + 1, 0, MiB + 3, 6 * MiB, 2 * MiB]
    pieces = [os.urandom(size) for size in sizes]
    partials = []
    for i, piece in enumerate(pieces):
        server = pair[i % 2]
        location = create_upload(client, server.url, len(piece), {"Upload-Concat": "partial"})
        if i < len(pieces) - 1 and piece:
            assert patch(client, location, 0, piece).status_code == 204
        partials.append(location)
    response = client.post(a.url, headers={**TUS, "Upload-Concat": "final;" + " ".join(partials)})
    assert response.status_code == 201, response.text
    final = response.headers["Location"]
    assert "Upload-Offset" not in client.head(final, headers=TUS).headers
    assert patch(client, on(b, partials[-1]), 0, pieces[-1]).status_code == 204
    data = b"".join(pieces)
    wait_for(
        lambda: (
            client.head(on(b, final), headers=TUS).headers.get("Upload-Offset") == str(len(data))
        ),
        20,
        "the final upload assembled",
    )
    assert_finished(s3, s3_bucket, upload_id(final), data)
    for location, piece in zip(partials, pieces, strict=True):
        assert_finished(s3, s3_bucket, upload_id(location), piece)
    assert_no_leftovers(s3, s3_bucket)
    assert sha(client.get(on(a, final)).content) == sha(data)


# -- removal and orphans -----------------------------------------------------------------


def _unfinished_with_part_and_tail(
    client: httpx.Client, server: ServerProcess, s3: MotoServer, bucket: str
) -> tuple[str, str]:
    """An upload of 12 MiB with 7 MiB sent: one 5 MiB part in an open multipart upload
    and a 2 MiB tail object. (location, key)"""
    data = os.urandom(12 * MiB)
    location = create_upload(client, server.url, len(data))
    key = "rm/" + upload_id(location)
    assert patch(client, location, 0, data[: 7 * MiB]).status_code == 204
    wait_holding(s3, bucket, key, data, 7 * MiB)
    assert len(open_uploads(s3, bucket, key)) == 1
    assert any(name != key for name in s3.objects(bucket, key)), "a tail object"
    return location, key


def test_termination_removes_every_object_and_aborts_the_multipart_upload(
    make_server, s3, s3_bucket, client
):
    server = make_server(*s3_flags(s3, s3_bucket, prefix="rm/"))
    location, key = _unfinished_with_part_and_tail(client, server, s3, s3_bucket)
    assert client.delete(location, headers=TUS).status_code == 204
    assert client.head(location, headers=TUS).status_code in (404, 410)
    assert s3.objects(s3_bucket, key) == {}
    assert open_uploads(s3, s3_bucket, key) == []
    assert s3.objects(s3_bucket) == {} and s3.open_multipart_uploads(s3_bucket) == []
    # a finished upload too (Termination applies to any upload)
    data = os.urandom(6 * MiB)
    location = create_upload(client, server.url, len(data))
    assert patch(client, location, 0, data).status_code == 204
    assert_finished(s3, s3_bucket, "rm/" + upload_id(location), data)
    assert client.delete(location, headers=TUS).status_code == 204
    assert s3.objects(s3_bucket) == {} and s3.open_multipart_uploads(s3_bucket) == []


def test_expiry_removes_every_object_and_aborts_the_multipart_upload(
    make_server, s3, s3_bucket, client
):
    server = make_server(
        *s3_flags(s3, s3_bucket, "--expiration", "3s", "--cleanup-interval", "250ms", prefix="rm/")
    )
    location, key = _unfinished_with_part_and_tail(client, server, s3, s3_bucket)
    wait_for(lambda: client.head(location, headers=TUS).status_code in (404, 410), 20, "expiry")
    wait_for(
        lambda: not s3.objects(s3_bucket, key) and not open_uploads(s3, s3_bucket, key),
        10,
        "the expired upload's objects and multipart upload gone",
    )
    assert s3.objects(s3_bucket) == {} and s3.open_multipart_uploads(s3_bucket) == []


async def _eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 10) -> None:
    """wait_for for the in-process server: waits without blocking its event loop."""
    with anyio.fail_after(timeout):
        while True:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await anyio.sleep(0.02)


@pytest.mark.anyio
async def test_orphan_sweep_aborts_strays_but_not_an_active_upload(tmp_path, s3, s3_bucket):
    """Multipart uploads created behind the server's back under its prefix (for a key that
    is no upload, and for a terminated upload) are aborted by the sweep (moto reports an
    old `Initiated` date, so they count as old); the open multipart upload of an active
    upload and one outside the prefix are left alone, and the active upload then finishes
    normally."""
    settings = s3_settings(s3, s3_bucket, s3_object_prefix="up/", s3_part_size=5 * MiB)
    async with serving(tmp_path, **settings) as (client, core):
        data = os.urandom(9 * MiB)
        created = await client.post("/files/", headers={**TUS, "Upload-Length": str(len(data))})
        assert created.status_code == 201
        location = created.headers["Location"]
        key = "up/" + upload_id(location)
        first = await client.patch(
            location, headers={**OCTET, "Upload-Offset": "0"}, content=data[: 7 * MiB]
        )
        assert first.status_code == 204
        await _eventually(lambda: holding(s3, s3_bucket, key, data) == 7 * MiB)
        (active,) = open_uploads(s3, s3_bucket, key)

        bucket = s3.client()
        stray = bucket.create_multipart_upload(Bucket=s3_bucket, Key="up/stray-id")["UploadId"]
        bucket.upload_part(
            Bucket=s3_bucket, Key="up/stray-id", UploadId=stray, PartNumber=1, Body=b"x" * 1000
        )
        outside = bucket.create_multipart_upload(Bucket=s3_bucket, Key="other/stray-id")
        # one for a terminated upload (as a stale writer could leave after the removal)
        gone = await client.post("/files/", headers={**TUS, "Upload-Length": "10"})
        assert (await client.delete(gone.headers["Location"], headers=TUS)).status_code == 204
        gone_key = "up/" + upload_id(gone.headers["Location"])
        bucket.create_multipart_upload(Bucket=s3_bucket, Key=gone_key)
        assert await upkeep.sweep_strays(core) == 2

        left = {(u["Key"], u["UploadId"]) for u in s3.open_multipart_uploads(s3_bucket)}
        assert left == {(key, active["UploadId"]), ("other/stray-id", outside["UploadId"])}

        rest = await client.patch(
            location, headers={**OCTET, "Upload-Offset": str(7 * MiB)}, content=data[7 * MiB :]
        )
        assert rest.status_code == 204
        await _eventually(lambda: s3.objects(s3_bucket, key) == {key: len(data)})
        assert_finished(s3, s3_bucket, key, data)
        assert await upkeep.sweep_strays(core) == 0
        left = {(u["Key"], u["UploadId"]) for u in s3.open_multipart_uploads(s3_bucket)}
        assert left == {("other/stray-id", outside["UploadId"])}


# -- processing, hooks, downloads, health ------------------------------------------------


def _csv(rows: int) -> bytes:
    """A CSV of about 1 KiB a row (so a few thousand rows make several parts)."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["id", "name", "amount", "notes"])
    for i in range(rows):
        writer.writerow([i, f"name {i}", i * 3 - 7, ("note, with comma " * 60)[: 900 + i % 50]])
    return out.getvalue().encode()


def test_csv_processing_of_an_s3_upload(make_server, s3, s3_bucket):
    """--plugins validate,csv reads the finished S3 object: the job completes with the
    right record count and the digest of the bytes sent."""
    server = make_server(*s3_flags(s3, s3_bucket, "--plugins", "validate,csv"))
    data = _csv(7000)
    assert len(data) > 5 * MiB  # several parts
    location = tuspy_upload(server.url, data, {"filename": "rows.csv"})
    doc = final_status(location, timeout=60)
    assert doc["status"] == "completed", doc
    job = doc["processing"]
    assert job["results"]["csv"]["records"] == 7000
    assert job["results"]["csv"]["errors_total"] == 0
    assert job["results"]["validate"]["digests"]["sha256"] == sha(data)
    assert job["bytes_processed"] == len(data)
    assert_finished(s3, s3_bucket, upload_id(location), data)


def test_post_finish_hook_gets_the_s3_storage(make_server, s3, s3_bucket, client, tmp_path):
    """tusd's storage object: {"Type": "s3store", "Bucket", "Key"}, the key of the finished
    object (with the prefix), readable when the hook runs."""
    box = HookBox(tmp_path / "box", ["post-finish"])
    server = make_server(*s3_flags(s3, s3_bucket, "--hooks-dir", str(box.hooks), prefix="h/"))
    data = os.urandom(6 * MiB + 1)
    location = create_upload(client, server.url, len(data))
    assert patch(client, location, 0, data).status_code == 204
    (event,) = box.wait("post-finish", 1, upload_id(location))
    storage = event["request"]["Event"]["Upload"]["Storage"]
    assert storage == {"Type": "s3store", "Bucket": s3_bucket, "Key": "h/" + upload_id(location)}
    assert sha(s3.read(s3_bucket, storage["Key"])) == sha(data)


def test_get_streams_with_ranges_and_presigned_redirects(make_server, s3, s3_bucket, client):
    data = os.urandom(26 * MiB + 5)  # one PATCH: 5 parts, up to 4 of them in flight at once
    size = len(data)
    server = make_server(*s3_flags(s3, s3_bucket))
    location = create_upload(client, server.url, size)
    assert patch(client, location, 0, data).status_code == 204
    with client.stream("GET", location) as response:
        assert response.status_code == 200
        assert response.headers["Accept-Ranges"] == "bytes"
        assert response.headers["Content-Length"] == str(size)
        assert sha(b"".join(response.iter_bytes())) == sha(data)
    spans = [(5 * MiB - 10, 5 * MiB + 9), (0, 0), (3 * MiB, 21 * MiB), (size - 100, size - 1)]
    for start, end in spans:
        ranged = client.get(location, headers={"Range": f"bytes={start}-{end}"})
        assert ranged.status_code == 206
        assert ranged.headers["Content-Range"] == f"bytes {start}-{end}/{size}"
        assert ranged.content == data[start : end + 1]
    suffix = client.get(location, headers={"Range": "bytes=-1000"})
    assert suffix.status_code == 206 and suffix.content == data[-1000:]

    presigning = make_server(*s3_flags(s3, s3_bucket, "--s3-presigned-downloads"))
    metadata = "filename " + b64("report 2024.pdf") + ",filetype " + b64("application/pdf")
    for body in (data, data[:1000]):  # a multipart upload, and one PutObject
        location = create_upload(client, presigning.url, len(body), {"Upload-Metadata": metadata})
        assert patch(client, location, 0, body).status_code == 204
        redirect = client.get(location)
        assert redirect.status_code in (302, 303, 307)
        url = redirect.headers["Location"]
        assert url.startswith(s3.endpoint)
        direct = httpx.get(url, timeout=30)
        assert direct.status_code == 200 and sha(direct.content) == sha(body)
        # the object carries the metadata's type and name, for downloads straight from S3
        assert direct.headers["Content-Type"] == "application/pdf"
        assert 'filename="report 2024.pdf"' in direct.headers["Content-Disposition"]
        ranged = client.get(location, headers={"Range": "bytes=100-199"}, follow_redirects=True)
        assert ranged.status_code == 206 and ranged.content == body[100:200]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _health(server: ServerProcess) -> tuple[int, dict[str, Any]]:
    response = httpx.get(server.origin + "/health", timeout=30)
    return response.status_code, response.json()


def test_health_reports_the_bucket(make_server, s3, s3_bucket, client):
    """/health checks the bucket: 200 with S3 up; 503 (never 500) with a bucket that does
    not exist or an S3 endpoint nobody answers at, and uploads there get 503/507."""
    good = make_server(*s3_flags(s3, s3_bucket))
    code, report = _health(good)
    assert code == 200 and report["status"] == "ok", report

    missing = make_server(*s3_flags(s3, "no-such-bucket-here"))
    code, report = _health(missing)
    assert code == 503 and report["status"] == "fail", report
    assert any(not check["ok"] for check in report["checks"].values()), report
    created = client.post(missing.url, headers={**TUS, "Upload-Length": "10"})
    assert created.status_code in (201, 503), created.text
    if created.status_code == 201:
        sent = patch(client, created.headers["Location"], 0, b"0123456789")
        assert sent.status_code in (503, 507), sent.text

    nobody = make_server(
        "--s3-bucket", s3_bucket, "--s3-endpoint", f"http://127.0.0.1:{free_port()}",
        "--s3-region", "us-east-1", "--s3-force-path-style",
    )  # fmt: skip
    code, report = _health(nobody)
    assert code == 503 and report["status"] == "fail", report
