"""A PATCH cut mid-body, then what tus clients do next: HEAD, and PATCH at HEAD's offset.

HEAD takes the upload's lock, which makes the cut request (if the server has not noticed the
cut yet) save what it received and let go; so HEAD's offset is final and the next PATCH at it
is accepted (204), never refused with 409. Repeated with varied cut points and body sizes on
both body paths (< 64 KiB: uvicorn's; >= 64 KiB: tusserver.fastbody), with one worker and
with two, for the three ways a cut reaches the server: a FIN, a RST, or nothing at all (a
stalled connection, which only the release request that HEAD sends ends).

The 409s the browser test (test_upload_page) shows after a cut are Chromium's own: a request
whose reused keep-alive connection is reset before any response is resent by Chromium's
network stack, unseen by the page, with the same headers, so with the Upload-Offset from
before the cut; the server answers it 409 with the settled offset, and tus-js-client then
HEADs and resumes. test_replayed_cut_patch_gets_409_with_the_settled_offset pins that down.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import urllib.parse

import httpx
import pytest
from conftest import TUS, ServerFactory, ServerProcess, create_upload, patch, wait_receiving
from rawclient import RawRequest, patch_request

KiB = 1024
# per server; TUSSERVER_CUT_ROUNDS=300 for a long hunt
ROUNDS = int(os.environ.get("TUSSERVER_CUT_ROUNDS") or 12)
MODES = ("fin", "rst", "stall")


def cut_after(
    server: ServerProcess, path: str, data: bytes, first: int, second: int, mode: str
) -> RawRequest | None:
    """PATCH `data` at offset 0, send `second` bytes of it (the server is known to be
    receiving after `first`), then cut: FIN, RST, or stall (the socket stays open; returned,
    for the caller to close once done)."""
    request = patch_request(server.port, path, 0, len(data))
    request.send(data[:first])
    wait_receiving(server)
    request.send(data[first:second])
    if mode == "stall":
        return request
    if mode == "rst":
        request.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    request.close()
    return None


@pytest.mark.parametrize("workers", [1, 2])
def test_patch_at_head_offset_after_cut_is_accepted(
    make_server: ServerFactory, workers: int
) -> None:
    """ROUNDS cuts (FIN, RST, stall in turn), each followed by HEAD and a PATCH at HEAD's
    offset, which must complete the upload."""
    server = make_server(*(("--workers", str(workers)) if workers > 1 else ()))
    rng = random.Random(workers)
    failures = []
    with httpx.Client(timeout=20) as http:
        for round_ in range(ROUNDS):
            # body sizes on both sides of the fast-path threshold (64 KiB)
            length = rng.choice([40 * KiB, 70 * KiB, 300 * KiB, 1024 * KiB])
            mode = MODES[round_ % len(MODES)]
            data = rng.randbytes(length)
            location = create_upload(http, server.url, length)
            path = urllib.parse.urlparse(location).path
            first = rng.randrange(1, length // 2)
            second = rng.randrange(first, length - 1)
            stalled = cut_after(server, path, data, first, second, mode)
            try:
                head = http.head(location, headers=TUS)
                assert head.status_code == 200, head.text
                offset = int(head.headers["Upload-Offset"])
                assert offset <= second
                resumed = patch(http, location, offset, data[offset:])
            finally:
                if stalled is not None:
                    stalled.close()
            if resumed.status_code != 204 or resumed.headers["Upload-Offset"] != str(length):
                failures.append(
                    (
                        round_,
                        mode,
                        length,
                        first,
                        second,
                        offset,
                        resumed.status_code,
                        resumed.headers.get("Upload-Offset"),
                        resumed.text,
                    )
                )
                wait_receiving(server, 0)  # whatever still runs ends before the next round
    assert not failures, failures


def test_replayed_cut_patch_gets_409_with_the_settled_offset(make_server: ServerFactory) -> None:
    """What Chromium does after a cut on a reused connection: the same PATCH (Upload-Offset 0)
    again on a new connection. It gets 409 with the offset the cut request settled at (the
    one HEAD reports next, not an older one), and a PATCH there is accepted."""
    server = make_server()
    length = 1024 * KiB
    data = random.Random(7).randbytes(length)
    with httpx.Client(timeout=20) as http:
        for mode in MODES:
            location = create_upload(http, server.url, length)
            path = urllib.parse.urlparse(location).path
            stalled = cut_after(server, path, data, 100 * KiB, 600 * KiB, mode)
            try:
                replay = RawRequest(
                    server.port,
                    "PATCH",
                    path,
                    {
                        **TUS,
                        "Upload-Offset": "0",
                        "Content-Type": "application/offset+octet-stream",
                        "Content-Length": str(length),
                    },
                )
                status, headers, _ = replay.response()  # answered before any body byte
                replay.close()
                assert status == 409, mode
                settled = int(headers["upload-offset"])
                assert 100 * KiB <= settled <= 600 * KiB, mode
                head = http.head(location, headers=TUS)
                assert int(head.headers["Upload-Offset"]) == settled, mode
                resumed = patch(http, location, settled, data[settled:])
                assert resumed.status_code == 204, (mode, resumed.text)
                assert resumed.headers["Upload-Offset"] == str(length), mode
            finally:
                if stalled is not None:
                    stalled.close()
            upload_id = path.rsplit("/", 1)[1]
            assert (server.upload_dir / upload_id).read_bytes() == data, mode
