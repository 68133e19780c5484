"""A throwaway S3-compatible server for the test session: moto's server mode (from PyPI, a
test dependency), on a free loopback port, one per session; each test gets its own bucket.

moto keeps objects in memory and answers slowly for large bodies, which is fine for tests
(the benchmarks say what that means for figures). It does not verify part checksums and
reports a fixed `Initiated` date for multipart uploads; tests that need either say so.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx

ACCESS_KEY = "tusserver-test"
SECRET_KEY = "tusserver-test-secret"
REGION = "us-east-1"


def s3_client(endpoint: str, verify: str | None = None, **config: Any) -> Any:
    """A boto3 S3 client for a local endpoint: path-style, the test credentials; `config`
    adds botocore Config options (retries=...), `verify` a CA bundle for https."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
        config=Config(s3={"addressing_style": "path"}, **config),
        verify=verify,
    )


class MotoServer:
    """`python -m moto.server` on 127.0.0.1:port; `client()` is a boto3 client for it."""

    def __init__(self, port: int):
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and return once it answers."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "1"},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.endpoint}/moto-api/", timeout=1).status_code < 500:
                    return
            time.sleep(0.05)
        raise RuntimeError("moto server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def env(self) -> dict[str, str]:
        """Credentials as the standard AWS chain reads them (what a server process gets)."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    def client(self) -> Any:
        """A boto3 S3 client for inspecting buckets in tests."""
        return s3_client(self.endpoint)

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """Every object key in the bucket (under `prefix`) with its size."""
        found: dict[str, int] = {}
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        for page in pages:
            for item in page.get("Contents", []):
                found[item["Key"]] = item["Size"]
        return found

    def open_multipart_uploads(self, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
        """Multipart uploads not completed or aborted (what costs money when orphaned)."""
        answer = self.client().list_multipart_uploads(Bucket=bucket, Prefix=prefix)
        return list(answer.get("Uploads", []))

    def read(self, bucket: str, key: str) -> bytes:
        return bytes(self.client().get_object(Bucket=bucket, Key=key)["Body"].read())


@contextlib.contextmanager
def running(port: int) -> Iterator[MotoServer]:
    server = MotoServer(port)
    server.start()
    try:
        yield server
    finally:
        server.stop()
