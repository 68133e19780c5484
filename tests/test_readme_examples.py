"""The README's client examples, extracted and run as written against a real server, so the
README cannot drift from what the clients actually do (a tuspy example without URL storage
once looked resumable but created a new upload on every run)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ROOT, TUS, data_files
from tusclient.uploader import Uploader

README_URL = "http://127.0.0.1:8080/files/"
MiB = 1024 * 1024
INTEROP = ROOT / "tests" / "interop"


def readme_block(heading: str, language: str, index: int = 0) -> str:
    """The index-th ```language block of the README section under `heading`."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"\n{heading}\n", 1)[1]
    section = re.split(r"\n#{2,3} ", section, maxsplit=1)[0]
    blocks = re.findall(rf"```{language}\n(.*?)```", section, re.S)
    assert len(blocks) > index, f"no {language} block #{index} under {heading!r}"
    code: str = blocks[index]
    assert README_URL in code, "the example no longer uses the default server URL"
    return code


def stored(client: httpx.Client, url: str) -> bytes:
    response = client.get(url)
    assert response.status_code == 200, response.status_code
    return response.content


class Interrupted(Exception):
    """The simulated crash after the first chunk."""


def test_readme_tuspy_example_resumes(server, monkeypatch, tmp_path):
    """Interrupted after its first chunk, the example run again continues the same upload from
    the server's offset (no second upload); after that upload is terminated, a run starts a
    new one instead of failing on the stale stored URL."""
    code = readme_block("### tuspy", "python").replace(README_URL, server.url)
    monkeypatch.chdir(tmp_path)
    content = os.urandom(10 * MiB + 12345)  # two 8 MiB chunks
    (tmp_path / "big.csv").write_bytes(content)
    real_upload_chunk = Uploader.upload_chunk

    def crash_after_first_chunk(self: Uploader) -> None:
        real_upload_chunk(self)
        raise Interrupted

    def run() -> dict[str, Any]:
        namespace: dict[str, Any] = {"__name__": "readme_example"}
        try:
            exec(compile(code, "README.md (tuspy)", "exec"), namespace)
        finally:
            storage = namespace.get("storage")
            if storage is not None:
                storage.close()  # release the URL file (tinydb) before the next run
        return namespace

    with monkeypatch.context() as patch:
        patch.setattr(Uploader, "upload_chunk", crash_after_first_chunk)
        with pytest.raises(Interrupted):
            run()
    assert len(data_files(server.upload_dir)) == 1
    with httpx.Client() as client:
        [first_url] = [f"{server.url}{name}" for name in data_files(server.upload_dir)]
        head = client.head(first_url, headers=TUS)
        assert head.headers["Upload-Offset"] == str(8 * MiB)

        resumed = run()["uploader"]
        assert resumed.url == first_url
        assert len(data_files(server.upload_dir)) == 1, "the re-run created a second upload"
        assert stored(client, first_url) == content

        assert client.delete(first_url, headers=TUS).status_code == 204
        fresh = run()["uploader"]
        assert fresh.url != first_url
        assert stored(client, fresh.url) == content


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    """A scratch dir whose node_modules is the interop tests' pinned tus-js-client."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are required (README: make test needs Node >= 18)")
    if not (INTEROP / "node_modules" / "tus-js-client").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=INTEROP, check=True, timeout=300
        )
    (tmp_path / "node_modules").symlink_to(INTEROP / "node_modules")
    return tmp_path


def test_readme_tus_js_client_node_example_resumes(server, node_dir):
    """The Node script run twice on one file: the second run finds the stored URL and finishes
    on it; the server has exactly one upload, with the file's bytes."""
    code = readme_block("### tus-js-client (Node and browsers)", "js", index=1)
    (node_dir / "upload.mjs").write_text(code.replace(README_URL, server.url))
    content = os.urandom(3 * MiB)
    (node_dir / "big.csv").write_bytes(content)
    urls = []
    for _ in range(2):
        done = subprocess.run(
            ["node", "upload.mjs", "big.csv"],
            cwd=node_dir,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        urls.append(done.stdout.strip())
    assert urls[0] == urls[1] and urls[0].startswith(server.url)
    assert len(data_files(server.upload_dir)) == 1, "the second run created another upload"
    with httpx.Client() as client:
        assert stored(client, urls[0]) == content
