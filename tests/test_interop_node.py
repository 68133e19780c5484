"""Interop with tus-js-client (the client behind Uppy) running in Node.

tests/interop/tus_upload.mjs drives the client; its npm dependencies are pinned by
tests/interop/package-lock.json and installed by `make test` (npm ci).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, TUS

INTEROP = ROOT / "tests" / "interop"
MiB = 1024 * 1024
SIZE = 50 * MiB


@pytest.fixture(scope="module")
def node_client() -> Path:
    """The installed tus-js-client (npm ci here if `make test` has not done it yet)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are required for the interop tests")
    if not (INTEROP / "node_modules" / "tus-js-client").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=INTEROP, check=True, timeout=300
        )
    return INTEROP / "tus_upload.mjs"


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """50 MiB of random bytes, written in pieces (never held whole in memory)."""
    path = tmp_path_factory.mktemp("interop") / "data.bin"
    with path.open("wb") as out:
        for _ in range(SIZE // MiB):
            out.write(os.urandom(MiB))
    return path


def run_node(script: Path, **options: object) -> list[dict[str, object]]:
    """Run the tus-js-client script; its JSON events, failing the test if it failed."""
    done = subprocess.run(
        ["node", str(script), json.dumps(options)],
        cwd=INTEROP,
        capture_output=True,
        text=True,
        timeout=120,
    )
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0, f"node failed: {events} {done.stderr[-2000:]}"
    return events


def last(events: list[dict[str, object]], name: str) -> dict[str, object]:
    matching = [e for e in events if e["event"] == name]
    assert matching, f"no {name!r} event in {events}"
    return matching[-1]


def assert_same_bytes(client: httpx.Client, url: str, path: Path) -> None:
    """GET the upload and compare it with the file byte for byte, streaming both."""
    with client.stream("GET", url) as response, path.open("rb") as original:
        assert response.status_code == 200
        total = 0
        for piece in response.iter_bytes(MiB):
            assert piece == original.read(len(piece)), f"bytes differ after offset {total}"
            total += len(piece)
        assert original.read(1) == b"" and total == path.stat().st_size


def test_tus_js_client_abort_resume_download_terminate(server, client, node_client, data_file):
    """tus-js-client uploads 50 MiB in 8 MiB chunks, is aborted mid-way, resumes from the
    stored URL (HEAD, then PATCH from the server's offset), the result matches byte for byte,
    and Upload.terminate removes it (Termination: later requests get 404 or 410)."""
    aborted = last(
        run_node(
            node_client,
            endpoint=server.url,
            file=str(data_file),
            chunkSize=8 * MiB,
            abortAt=20 * MiB,
            metadata={"filename": "data.bin"},
        ),
        "aborted",
    )
    url = str(aborted["url"])
    kept = int(client.head(url, headers=TUS).headers["Upload-Offset"])
    assert 20 * MiB <= kept < SIZE
    done = last(
        run_node(
            node_client, endpoint=server.url, file=str(data_file), chunkSize=8 * MiB, uploadUrl=url
        ),
        "success",
    )
    assert done["url"] == url
    assert isinstance(done["firstProgress"], int) and done["firstProgress"] >= kept  # no restart
    head = client.head(url, headers=TUS)
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(SIZE)
    assert_same_bytes(client, url, data_file)
    last(run_node(node_client, terminate=url), "terminated")
    assert client.head(url, headers=TUS).status_code == 410
    assert not (server.upload_dir / url.rsplit("/", 1)[1]).exists()


def test_tus_js_client_parallel_uploads(shared_server, client, node_client, data_file):
    """parallelUploads: 4 makes tus-js-client upload four partial uploads at once and join
    them with a final upload (Concatenation); the result matches byte for byte."""
    events = run_node(
        node_client,
        endpoint=shared_server.url,
        file=str(data_file),
        chunkSize=8 * MiB,
        parallelUploads=4,
        metadata={"filename": "parallel.bin"},
    )
    url = str(last(events, "success")["url"])
    head = client.head(url, headers=TUS)
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(SIZE)
    kind, _, partials = head.headers["Upload-Concat"].partition(";")
    assert kind == "final" and len(partials.split()) == 4
    for partial in partials.split():
        assert client.head(partial, headers=TUS).headers["Upload-Concat"] == "partial"
    encoded = base64.b64encode(b"parallel.bin").decode()
    assert f"filename {encoded}" in head.headers["Upload-Metadata"]
    assert_same_bytes(client, url, data_file)
