"""kill -9 trials: the server dies at random points of large PATCHes, restarts, the client
resumes with tuspy, and the final file must equal the source byte for byte.

Durability policy under test: when the server answers 204 with Upload-Offset N (and whenever
the registry records offset N during a long body), bytes 0..N are already fdatasync'ed, so
the offset a restarted server reports is never ahead of the data on disk.

TUSSERVER_CRASH_TRIALS sets the number of trials (20 in the suite; tests/bench/crash_trials.sh
runs hundreds). TUSSERVER_CRASH_SEED replays a failing run (the seed is in the test output).
"""

from __future__ import annotations

import io
import os
import random
import time
import urllib.parse

import httpx
from conftest import TUS, ServerProcess, create_upload
from rawclient import patch_request
from tusclient import client as tus_client

MiB = 1024 * 1024
TRIALS = int(os.environ.get("TUSSERVER_CRASH_TRIALS", "20"))
PIECE = 256 * 1024


def head_offset(http: httpx.Client, location: str) -> int:
    response = http.head(location, headers=TUS)
    assert response.status_code == 200, response.text
    return int(response.headers["Upload-Offset"])


def send_until_killed(
    server: ServerProcess, path: str, data: bytes, kill_at: int, pace: float
) -> int:
    """Stream `data` as one PATCH; SIGKILL the server once `kill_at` bytes are sent.

    kill_at == len(data) waits for the 204 first (an acknowledged upload must survive).
    `pace` seconds between 256 KiB pieces spread the body over time so kills land before,
    between and after the server's once-a-second checkpoints (this is load shaping, not
    synchronisation: the kill is triggered by the byte count).
    """
    request = patch_request(server.port, path, 0, len(data))
    try:
        while request.sent < kill_at:
            piece = data[request.sent : min(request.sent + PIECE, kill_at)]
            if not request.send(piece):
                break
            if pace:
                time.sleep(pace)
        if kill_at == len(data):
            status, headers, _ = request.response()
            assert status == 204
            assert headers["upload-offset"] == str(len(data))
        server.kill()
        return request.sent
    finally:
        request.close()


def test_kill9_at_random_points_then_resume(make_server, tmp_path):
    """Every trial: kill -9 mid-PATCH, restart, check the offset is backed by identical bytes
    on disk, resume with tuspy and compare the whole file."""
    seed = int(os.environ.get("TUSSERVER_CRASH_SEED") or random.randrange(2**32))
    print(f"crash trials seed={seed}")
    rng = random.Random(seed)
    server = make_server()
    http = httpx.Client(timeout=30)
    checkpointed = 0
    for trial in range(TRIALS):
        size = rng.choice([2, 6, 12]) * MiB + rng.randrange(PIECE)
        kill_at = size if rng.random() < 0.15 else rng.randrange(size)
        pace = rng.choice([0.0, 0.01, 0.03])
        if trial == 0:  # always one kill well after the first checkpoint (1 s into the body)
            size, kill_at, pace = 12 * MiB, 10 * MiB, 0.05
        data = rng.randbytes(size)
        location = create_upload(http, server.url, size)
        upload_id = location.rsplit("/", 1)[-1]
        path = urllib.parse.urlparse(location).path
        sent = send_until_killed(server, path, data, kill_at, pace)
        server.start()

        offset = head_offset(http, location)
        context = f"trial {trial} seed {seed}: size {size} sent {sent} offset {offset}"
        assert offset <= sent, context
        if kill_at == size:
            assert offset == size, context
        on_disk = (server.upload_dir / upload_id).read_bytes()
        assert len(on_disk) >= offset, context
        assert on_disk[:offset] == data[:offset], context
        checkpointed += 0 < offset < size
        if trial == 0:
            assert 0 < offset < size, f"no checkpoint recorded in 2 s of body: {context}"

        uploader = tus_client.TusClient(server.url).uploader(
            file_stream=io.BytesIO(data), url=location, chunk_size=4 * MiB
        )
        assert uploader.offset == offset, context
        uploader.upload()
        assert head_offset(http, location) == size, context
        assert (server.upload_dir / upload_id).read_bytes() == data, context
    http.close()
    print(f"{TRIALS} trials, {checkpointed} resumed from a mid-body checkpoint")
