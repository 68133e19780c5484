"""Interop with tuspy (the Python tus client): upload, resume, metadata, per-chunk checksums."""

from __future__ import annotations

import base64
import io
import os

import pytest
from conftest import TUS
from netfault import CorruptingProxy, CuttingProxy
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError, TusUploadFailed

MiB = 1024 * 1024


def uploader(endpoint: str, data: bytes, chunk: int, **kwargs: object):
    return tus_client.TusClient(endpoint).uploader(
        file_stream=io.BytesIO(data), chunk_size=chunk, retry_delay=0, **kwargs
    )


def test_tuspy_upload_with_metadata_round_trip(shared_server, client):
    """tuspy uploads in chunks; metadata comes back verbatim on HEAD (Creation: "responses to
    HEAD requests MUST include the Upload-Metadata header and its value as specified")."""
    data = os.urandom(3 * MiB + 17)
    metadata = {"filename": "résumé 2024.csv", "filetype": "text/csv", "note": "a,b c"}
    up = uploader(shared_server.url, data, MiB, metadata=metadata)
    up.upload()
    location = str(up.url)
    head = client.head(location, headers=TUS)
    pairs = dict(pair.split(" ") for pair in head.headers["Upload-Metadata"].split(","))
    assert {k: base64.b64decode(v).decode() for k, v in pairs.items()} == metadata
    assert client.get(location).content == data


def test_tuspy_checksum_on_every_chunk(shared_server, client):
    """tuspy with upload_checksum=True sends `Upload-Checksum: sha1 ...` with every PATCH; a
    byte flipped in transit is caught (460), tuspy retries and the stored upload is intact
    (Checksum: "the uploaded chunk MUST be discarded")."""
    data = os.urandom(4 * MiB)
    proxy = CorruptingProxy(shared_server.port, nth_patch=2)
    try:
        up = uploader(
            f"http://127.0.0.1:{proxy.port}/files/", data, MiB, upload_checksum=True, retries=2
        )
        up.upload()
    finally:
        proxy.close()
    assert proxy.corrupted.is_set()
    assert proxy.patches == 5  # 4 chunks + 1 retry of the corrupted one
    location = str(up.url).replace(str(proxy.port), str(shared_server.port))
    assert client.get(location).content == data


def test_tuspy_corruption_without_checksum_goes_unnoticed(shared_server, client):
    """The control for the test above: without checksums the same flipped byte is stored, so
    it is the checksum that protects the data."""
    data = os.urandom(2 * MiB)
    proxy = CorruptingProxy(shared_server.port, nth_patch=2)
    try:
        up = uploader(f"http://127.0.0.1:{proxy.port}/files/", data, MiB)
        up.upload()
    finally:
        proxy.close()
    location = str(up.url).replace(str(proxy.port), str(shared_server.port))
    stored = client.get(location).content
    assert len(stored) == len(data) and stored != data


def test_tuspy_resume_after_interruption_with_checksums(shared_server, client):
    """A connection cut mid-chunk: with checksums the unverifiable part of the chunk is
    discarded, so the kept offset is the last chunk boundary (not what merely arrived);
    tuspy resumes from the stored URL and finishes."""
    data = os.urandom(12 * MiB)
    first = uploader(shared_server.url, data, 4 * MiB, upload_checksum=True)
    first.upload(stop_at=4 * MiB)
    location = str(first.url)
    proxy = CuttingProxy(shared_server.port, cut_after=int(2.5 * MiB))
    try:
        proxied = location.replace(str(shared_server.port), str(proxy.port))
        cut = uploader(proxied, data, 4 * MiB, url=proxied, upload_checksum=True, retries=0)
        with pytest.raises((TusCommunicationError, TusUploadFailed, OSError)):
            cut.upload()
        assert proxy.cut_done.is_set()
    finally:
        proxy.close()
    head = client.head(location, headers=TUS)  # also makes a still-running PATCH let go
    assert int(head.headers["Upload-Offset"]) == 4 * MiB
    resumed = uploader(shared_server.url, data, 4 * MiB, url=location, upload_checksum=True)
    assert resumed.get_offset() == 4 * MiB
    resumed.upload()
    assert client.get(location).content == data
