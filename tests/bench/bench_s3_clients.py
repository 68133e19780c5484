#!/usr/bin/env python3
"""Which S3 client library for the S3 store: boto3 (threads), aiobotocore (asyncio), obstore.

Run on demand (not part of the test suite), from the project root with the project venv:

    .venv/bin/python tests/bench/bench_s3_clients.py                    # moto + sink, median of 3
    .venv/bin/python tests/bench/bench_s3_clients.py --targets sink --clients boto3,boto3-lean

Each client uploads the same 1 GiB file as one multipart upload: 50 MiB parts read from the
file, 4 in flight, explicit part numbers (CreateMultipartUpload, UploadPart 1..N,
CompleteMultipartUpload), as the store does. Every run is a fresh client process; figures are
that process's CPU seconds (user+sys, getrusage, all threads) per GiB, wall MB/s, peak RSS and
how many times the body was read (bytes read from the file / bytes uploaded: botocore reads a
part once for its CRC32, once for the SigV4 payload SHA-256 on http:// and once to send it).

Targets, both on loopback: `moto` (moto's server mode from the project venv, as the tests use:
slow and in memory, so it hides client CPU behind its own) and `sink`, a mini S3 written here
that discards part bodies and answers the multipart calls at once (it keeps small objects and
part sizes, enough for @tus/s3-store and the tusserver store, see bench_s3.py); `sink-tls` is
the sink over https with a self-signed certificate (where botocore stops signing the payload
and sends the CRC32 as a trailer, as against real S3).

aiobotocore and obstore are installed into a scratch venv under /tmp/tusbench-peers, never
into the project. The file also runs the sink on its own:

    .venv/bin/python tests/bench/bench_s3_clients.py --sink PORT [--tls CERT KEY]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import resource
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
import zlib
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PEERS = Path(os.environ.get("TUSBENCH_PEERS", "/tmp/tusbench-peers"))
SCRATCH = Path(os.environ.get("TUSBENCH_S3_SCRATCH", "/tmp/tusbench-s3"))
CLIENT_VENV = PEERS / "s3clients"
MiB = 1024 * 1024
GiB = 1024 * MiB
ACCESS_KEY = "tusserver-test"
SECRET_KEY = "tusserver-test-secret"
REGION = "us-east-1"
BUCKET = "bench"

# -- the sink: a mini S3 that discards part bodies ----------------------------------------------

BUF = 1024 * 1024
KEEP_LIMIT = 64 * MiB  # PutObject bodies up to this size are kept (tail objects, .info, .part)


class Conn:
    """Buffered reads from one socket: head lines, exact lengths (kept or discarded)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.pending = bytearray()
        self.buf = bytearray(BUF)
        self.view = memoryview(self.buf)

    def _more(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.pending += data
        return True

    def until(self, marker: bytes) -> bytes | None:
        while True:
            at = self.pending.find(marker)
            if at >= 0:
                out = bytes(self.pending[:at])
                del self.pending[: at + len(marker)]
                return out
            if not self._more():
                return None

    def exact(self, n: int, keep: bool) -> bytes:
        """Read n bytes; return them if keep, else count them and return b''."""
        out = bytearray() if keep else None
        first = min(n, len(self.pending))
        if first:
            if out is not None:
                out += self.pending[:first]
            del self.pending[:first]
            n -= first
        while n:
            got = self.sock.recv_into(self.view, min(BUF, n))
            if not got:
                raise ConnectionError("body cut short")
            if out is not None:
                out += self.view[:got]
            n -= got
        return bytes(out) if out is not None else b""

    def body(self, headers: dict[str, str], keep: bool) -> tuple[bytes, int]:
        """The request body (kept or not) and its size on the wire."""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts, total = [], 0
            while True:
                line = self.until(b"\r\n")
                if line is None:
                    raise ConnectionError("chunked body cut short")
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    while self.until(b"\r\n"):  # trailer fields up to the empty line
                        pass
                    break
                parts.append(self.exact(size, keep))
                total += size
                self.until(b"\r\n")
            return b"".join(parts), total
        length = int(headers.get("content-length", "0") or 0)
        return self.exact(length, keep), length


def decode_aws_chunked(raw: bytes) -> bytes:
    """The payload of an aws-chunked body (size;chunk-signature CRLF data CRLF ... 0 trailers)."""
    out, pos = bytearray(), 0
    while pos < len(raw):
        end = raw.index(b"\r\n", pos)
        size = int(raw[pos:end].split(b";")[0], 16)
        pos = end + 2
        if size == 0:
            break
        out += raw[pos : pos + size]
        pos += size + 2
    return bytes(out)


class MiniS3:
    """State of the sink: multipart uploads (part sizes only) and objects (small ones kept)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.uploads: dict[str, dict[str, Any]] = {}
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.buckets: set[str] = {BUCKET}

    # every handler returns (status, headers, body)
    def handle(
        self, method: str, target: str, headers: dict[str, str], conn: Conn
    ) -> tuple[int, dict[str, str], bytes]:
        split = urllib.parse.urlsplit(target)
        query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
        path = urllib.parse.unquote(split.path).lstrip("/")
        bucket, _, key = path.partition("/")
        aws_chunked = "aws-chunked" in headers.get("content-encoding", "")
        is_part = method == "PUT" and "partNumber" in query and "x-amz-copy-source" not in headers
        declared = int(headers.get("content-length", "0") or 0)
        keep = not is_part and declared <= KEEP_LIMIT
        raw, wire = conn.body(headers, keep)
        body = decode_aws_chunked(raw) if aws_chunked and keep else raw
        size = (
            int(headers["x-amz-decoded-content-length"])
            if "x-amz-decoded-content-length" in headers
            else (len(body) if keep else wire)
        )
        meta = {k: v for k, v in headers.items() if k.startswith("x-amz-meta-")}
        for name in ("content-type", "content-disposition", "cache-control"):
            if name in headers:
                meta[name] = headers[name]
        with self.lock:
            return self.route(method, bucket, key, query, headers, body, size, keep, meta)

    def route(
        self,
        method: str,
        bucket: str,
        key: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
        size: int,
        kept: bool,
        meta: dict[str, str],
    ) -> tuple[int, dict[str, str], bytes]:
        q = {k: v[0] for k, v in query.items()}
        echo = {k: v for k, v in headers.items() if k.startswith("x-amz-checksum-")}
        if not key:
            return self.bucket_call(method, bucket, q, body)
        if method == "POST" and "uploads" in q:
            upload_id = uuid.uuid4().hex
            self.uploads[upload_id] = {"bucket": bucket, "key": key, "parts": {}, "meta": meta}
            return (
                200,
                {},
                xml(
                    "InitiateMultipartUploadResult",
                    f"<Bucket>{bucket}</Bucket><Key>{esc(key)}</Key><UploadId>{upload_id}</UploadId>",
                ),
            )
        upload = self.uploads.get(q.get("uploadId", ""))
        if "uploadId" in q and upload is None:
            return error(404, "NoSuchUpload")
        # UploadPartCopy and CopyObject: the object copied
        source = headers.get("x-amz-copy-source")
        copied = None
        if source:
            src_bucket, _, src_key = urllib.parse.unquote(source).lstrip("/").partition("/")
            copied = self.objects.get((src_bucket, src_key))
            if copied is None:
                return error(404, "NoSuchKey")
        if method == "PUT" and "partNumber" in q:
            assert upload is not None
            etag = f'"{uuid.uuid4().hex}"'
            if copied is not None:
                size = copied["size"]
                rng = headers.get("x-amz-copy-source-range")
                if rng:
                    first, last = rng.split("=")[1].split("-")
                    size = int(last) - int(first) + 1
            upload["parts"][int(q["partNumber"])] = (size, etag)
            if copied is not None:
                return 200, {}, xml("CopyPartResult", f"<ETag>{esc(etag)}</ETag>")
            return 200, {"ETag": etag, **echo}, b""
        if method == "GET" and "uploadId" in q:
            assert upload is not None
            parts = "".join(
                f"<Part><PartNumber>{n}</PartNumber><ETag>{esc(e)}</ETag><Size>{s}</Size>"
                "<LastModified>2026-01-01T00:00:00.000Z</LastModified></Part>"
                for n, (s, e) in sorted(upload["parts"].items())
            )
            return (
                200,
                {},
                xml(
                    "ListPartsResult",
                    f"<Bucket>{bucket}</Bucket><Key>{esc(key)}</Key><UploadId>{q['uploadId']}"
                    f"</UploadId><IsTruncated>false</IsTruncated>{parts}",
                ),
            )
        if method == "POST" and "uploadId" in q:
            assert upload is not None
            wanted = [int(n) for n in re.findall(rb"<PartNumber>(\d+)</PartNumber>", body)]
            total = sum(upload["parts"][n][0] for n in wanted)
            del self.uploads[q["uploadId"]]
            etag = f'"{uuid.uuid4().hex}-{len(wanted)}"'
            self.objects[(bucket, key)] = {"size": total, "body": None, "meta": upload["meta"]}
            self.objects[(bucket, key)]["etag"] = etag
            return (
                200,
                {},
                xml(
                    "CompleteMultipartUploadResult",
                    f"<Location>/{bucket}/{esc(key)}</Location><Bucket>{bucket}</Bucket>"
                    f"<Key>{esc(key)}</Key><ETag>{esc(etag)}</ETag>",
                ),
            )
        if method == "DELETE" and "uploadId" in q:
            del self.uploads[q["uploadId"]]
            return 204, {}, b""
        if method == "PUT":
            if copied is not None:
                self.objects[(bucket, key)] = dict(copied)
                return 200, {}, xml("CopyObjectResult", f"<ETag>{esc(copied['etag'])}</ETag>")
            etag = f'"{uuid.uuid4().hex}"'
            self.objects[(bucket, key)] = {
                "size": size,
                "body": body if kept else None,
                "meta": meta,
                "etag": etag,
            }
            return 200, {"ETag": etag, **echo}, b""
        obj = self.objects.get((bucket, key))
        if method == "DELETE":
            self.objects.pop((bucket, key), None)
            return 204, {}, b""
        if obj is None:
            return error(404, "NoSuchKey")
        head = {"ETag": obj["etag"], "Last-Modified": "Thu, 01 Jan 2026 00:00:00 GMT"}
        head.update(obj["meta"])
        if method == "HEAD":
            return 200, {**head, "Content-Length": str(obj["size"])}, b""
        data = obj["body"] if obj["body"] is not None else bytes(obj["size"])
        rng = headers.get("range")
        if rng:
            first_s, last_s = rng.split("=")[1].split("-")
            start = int(first_s)
            end = int(last_s) if last_s else obj["size"] - 1
            head["Content-Range"] = f"bytes {start}-{end}/{obj['size']}"
            return 206, head, data[start : end + 1]
        return 200, head, data

    def bucket_call(
        self, method: str, bucket: str, q: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if method == "PUT":
            self.buckets.add(bucket)
            return 200, {}, b""
        if method == "HEAD":
            return (200, {}, b"") if bucket in self.buckets else (404, {}, b"")
        if method == "POST" and "delete" in q:
            keys = [
                urllib.parse.unquote(k.decode()) for k in re.findall(rb"<Key>(.*?)</Key>", body)
            ]
            for k in keys:
                self.objects.pop((bucket, k), None)
            done = "".join(f"<Deleted><Key>{esc(k)}</Key></Deleted>" for k in keys)
            return 200, {}, xml("DeleteResult", done)
        if method == "GET" and "uploads" in q:
            prefix = q.get("prefix", "")
            items = "".join(
                f"<Upload><Key>{esc(u['key'])}</Key><UploadId>{uid}</UploadId>"
                "<Initiated>2026-01-01T00:00:00.000Z</Initiated></Upload>"
                for uid, u in self.uploads.items()
                if u["bucket"] == bucket and u["key"].startswith(prefix)
            )
            return (
                200,
                {},
                xml(
                    "ListMultipartUploadsResult",
                    f"<Bucket>{bucket}</Bucket><IsTruncated>false</IsTruncated>{items}",
                ),
            )
        if method == "GET":
            prefix = q.get("prefix", "")
            found = [
                (k, o)
                for (b, k), o in sorted(self.objects.items())
                if b == bucket and k.startswith(prefix)
            ]
            contents = "".join(
                f"<Contents><Key>{esc(k)}</Key><Size>{o['size']}</Size><ETag>{esc(o['etag'])}"
                "</ETag><LastModified>2026-01-01T00:00:00.000Z</LastModified></Contents>"
                for k, o in found
            )
            return (
                200,
                {},
                xml(
                    "ListBucketResult",
                    f"<Name>{bucket}</Name><KeyCount>{len(found)}</KeyCount>"
                    f"<IsTruncated>false</IsTruncated>{contents}",
                ),
            )
        return error(400, "NotImplemented")


def esc(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def xml(root: str, inner: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} '
        f'xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{inner}</{root}>'
    ).encode()


def error(status: int, code: str) -> tuple[int, dict[str, str], bytes]:
    return status, {}, xml("Error", f"<Code>{code}</Code><Message>{code}</Message>")


REASONS = {
    200: "OK",
    204: "No Content",
    206: "Partial Content",
    400: "Bad Request",
    404: "Not Found",
}


LOG_REQUESTS = bool(os.environ.get("SINK_LOG"))  # request lines and headers to stderr


def serve_connection(sock: socket.socket, state: MiniS3) -> None:
    conn = Conn(sock)
    with sock:
        while True:
            head = conn.until(b"\r\n\r\n")
            if not head:
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if LOG_REQUESTS:
                print(lines[0], json.dumps(headers), file=sys.stderr, flush=True)
            if headers.get("expect", "").lower() == "100-continue":
                sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            try:
                status, out_headers, body = state.handle(method, target, headers, conn)
            except ConnectionError:
                return
            reply = [f"HTTP/1.1 {status} {REASONS.get(status, 'X')}"]
            reply += [f"{k}: {v}" for k, v in out_headers.items()]
            if status != 204 and "Content-Length" not in out_headers:
                reply.append(f"Content-Length: {len(body)}")
            if method == "HEAD":
                body = b""
            sock.sendall(("\r\n".join(reply) + "\r\n\r\n").encode("latin-1") + body)


def run_sink(port: int, tls: tuple[str, str] | None) -> None:
    state = MiniS3()
    server = socket.create_server(("127.0.0.1", port), backlog=256)
    context = None
    if tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*tls)
    while True:
        sock, _ = server.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def serve(sock: socket.socket = sock) -> None:
            try:
                if context is not None:
                    sock = context.wrap_socket(sock, server_side=True)
                serve_connection(sock, state)
            except (OSError, ssl.SSLError):
                pass

        threading.Thread(target=serve, daemon=True).start()


# -- the clients (each runs in a fresh process: `--worker NAME`) --------------------------------


class Region(io.RawIOBase):
    """A read-only window [offset, offset+length) of a file, counting the bytes read through it
    (a staged part, as the store hands it to the client library)."""

    reads = [0]
    lock = threading.Lock()

    def __init__(self, fd: int, offset: int, length: int):
        super().__init__()
        self.fd, self.offset, self.length, self.pos = fd, offset, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def __len__(self) -> int:
        return self.length

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.length}[whence]
        self.pos = max(0, min(self.length, base + pos))
        return self.pos

    def read(self, n: int | None = -1) -> bytes:
        left = self.length - self.pos
        n = left if n is None or n < 0 else min(n, left)
        if n <= 0:
            return b""
        data = os.pread(self.fd, n, self.offset + self.pos)
        self.pos += len(data)
        with Region.lock:
            Region.reads[0] += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def part_ranges(size: int, part_size: int) -> list[tuple[int, int, int]]:
    return [
        (i + 1, off, min(part_size, size - off)) for i, off in enumerate(range(0, size, part_size))
    ]


def crc32_of(fd: int, offset: int, length: int) -> str:
    """Base64 CRC32 of a file region (the store computes it while staging the part)."""
    crc, done = 0, 0
    while done < length:
        chunk = os.pread(fd, min(MiB, length - done), offset + done)
        crc = zlib.crc32(chunk, crc)
        done += len(chunk)
    return base64.b64encode(crc.to_bytes(4, "big")).decode()


def sha256_of(fd: int, offset: int, length: int) -> str:
    import hashlib

    h, done = hashlib.sha256(), 0
    while done < length:
        chunk = os.pread(fd, min(MiB, length - done), offset + done)
        h.update(chunk)
        done += len(chunk)
    return base64.b64encode(h.digest()).decode()


# client variants: library, botocore config and per-part extras
VARIANTS: dict[str, dict[str, Any]] = {
    # botocore defaults: CRC32 per part (read 1), SigV4 payload SHA-256 on http (read 2), send
    "boto3": {"lib": "boto3", "checksum": "when_supported", "signed": None},
    "boto3-noCRC": {"lib": "boto3", "checksum": "when_required", "signed": None},
    # a precomputed SHA-256 integrity checksum: botocore skips its CRC32, still hashes to sign
    "boto3-preSHA": {"lib": "boto3", "checksum": "when_required", "signed": None, "pre": "sha256"},
    # ... unless the signer takes the payload hash from that header (tusserver's s3_signing.py)
    "boto3-preSHA-reuse": {
        "lib": "boto3",
        "checksum": "when_required",
        "signed": None,
        "pre": "sha256",
        "reuse": True,
    },
    # unsigned payload: no SHA-256 pass; the CRC32 computed by us while staging
    "boto3-lean": {"lib": "boto3", "checksum": "when_required", "signed": False, "pre": "crc32"},
    "boto3-unsigned": {"lib": "boto3", "checksum": "when_required", "signed": False},
    "aiobotocore": {"lib": "aiobotocore", "checksum": "when_supported", "signed": None},
    "aiobotocore-lean": {
        "lib": "aiobotocore",
        "checksum": "when_required",
        "signed": False,
        "pre": "crc32",
    },
    # obstore reads the file itself (a path); "-pyfile" hands it a Python file object instead
    "obstore": {"lib": "obstore", "unsigned": False},
    "obstore-unsigned": {"lib": "obstore", "unsigned": True},
    "obstore-pyfile": {"lib": "obstore", "unsigned": True, "pyfile": True},
}


def botocore_config(variant: dict[str, Any], concurrency: int) -> Any:
    from botocore.config import Config

    s3: dict[str, Any] = {"addressing_style": "path"}
    if variant["signed"] is not None:
        s3["payload_signing_enabled"] = variant["signed"]
    return Config(
        s3=s3,
        request_checksum_calculation=variant["checksum"],
        response_checksum_validation="when_required",
        max_pool_connections=concurrency + 2,
        retries={"max_attempts": 1},
    )


def part_extra(variant: dict[str, Any], fd: int, offset: int, length: int) -> dict[str, str]:
    pre = variant.get("pre")
    if pre == "crc32":
        return {"ChecksumCRC32": crc32_of(fd, offset, length)}
    if pre == "sha256":
        return {"ChecksumSHA256": sha256_of(fd, offset, length)}
    return {}


def reuse_sha256_for_signing() -> None:
    """Sign with the payload SHA-256 the caller sent as x-amz-checksum-sha256 (hex of it)
    instead of botocore hashing the body again."""
    import botocore.auth

    original = botocore.auth.S3SigV4Auth.payload

    def payload(self: Any, request: Any) -> str:
        given = request.headers.get("x-amz-checksum-sha256")
        if (
            given
            and not self._is_streaming_checksum_payload(request)
            and self._should_sha256_sign_payload(request)
        ):
            return base64.b64decode(given).hex()
        return str(original(self, request))

    botocore.auth.S3SigV4Auth.payload = payload


def client_options(args: argparse.Namespace, variant: dict[str, Any]) -> dict[str, Any]:
    """The worker's boto3.client / aiobotocore create_client arguments after the "s3"."""
    return {
        "endpoint_url": args.endpoint,
        "aws_access_key_id": ACCESS_KEY,
        "aws_secret_access_key": SECRET_KEY,
        "region_name": REGION,
        "config": botocore_config(variant, args.concurrency),
        "verify": args.ca or None,
    }


def upload_boto3(args: argparse.Namespace, variant: dict[str, Any]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    if variant.get("reuse"):
        reuse_sha256_for_signing()
    client = boto3.client("s3", **client_options(args, variant))
    client.head_bucket(Bucket=args.bucket)  # connection and credentials warm, as in a server
    start_measuring()
    fd = os.open(args.file, os.O_RDONLY)
    size = os.fstat(fd).st_size
    key = args.key
    upload_id = client.create_multipart_upload(Bucket=args.bucket, Key=key)["UploadId"]

    def part(spec: tuple[int, int, int]) -> dict[str, Any]:
        number, offset, length = spec
        extra = part_extra(variant, fd, offset, length)
        answer = client.upload_part(
            Bucket=args.bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=Region(fd, offset, length),
            ContentLength=length,
            **extra,
        )
        return {"PartNumber": number, "ETag": answer["ETag"], **extra}

    with ThreadPoolExecutor(args.concurrency) as pool:
        parts = list(pool.map(part, part_ranges(size, args.part_size)))
    client.complete_multipart_upload(
        Bucket=args.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    os.close(fd)


def upload_aiobotocore(args: argparse.Namespace, variant: dict[str, Any]) -> None:
    import asyncio

    from aiobotocore.session import get_session

    async def run() -> None:
        session = get_session()
        async with session.create_client("s3", **client_options(args, variant)) as client:
            await client.head_bucket(Bucket=args.bucket)
            start_measuring()
            fd = os.open(args.file, os.O_RDONLY)
            size = os.fstat(fd).st_size
            created = await client.create_multipart_upload(Bucket=args.bucket, Key=args.key)
            upload_id = created["UploadId"]
            limit = asyncio.Semaphore(args.concurrency)

            async def part(spec: tuple[int, int, int]) -> dict[str, Any]:
                number, offset, length = spec
                async with limit:
                    extra = await asyncio.to_thread(part_extra, variant, fd, offset, length)
                    answer = await client.upload_part(
                        Bucket=args.bucket,
                        Key=args.key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=Region(fd, offset, length),
                        ContentLength=length,
                        **extra,
                    )
                return {"PartNumber": number, "ETag": answer["ETag"], **extra}

            parts = await asyncio.gather(*(part(s) for s in part_ranges(size, args.part_size)))
            await client.complete_multipart_upload(
                Bucket=args.bucket,
                Key=args.key,
                UploadId=upload_id,
                MultipartUpload={"Parts": list(parts)},
            )
            os.close(fd)

    asyncio.run(run())


def upload_obstore(args: argparse.Namespace, variant: dict[str, Any]) -> None:
    """obstore has no multipart API of its own (no part numbers we choose, no ListParts,
    ListMultipartUploads or UploadPartCopy): put() runs the whole multipart upload itself,
    reading the file in chunk_size parts, max_concurrency in flight."""
    import obstore
    from obstore.store import S3Store

    client_options: dict[str, Any] = {"allow_http": True}
    if args.ca:
        client_options["allow_invalid_certificates"] = True
    store = S3Store(
        args.bucket,
        endpoint=args.endpoint,
        region=REGION,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        virtual_hosted_style_request=False,
        unsigned_payload=variant["unsigned"],
        client_options=client_options,
    )
    start_measuring()
    if not variant.get("pyfile"):
        obstore.put(
            store,
            args.key,
            Path(args.file),
            chunk_size=args.part_size,
            max_concurrency=args.concurrency,
        )
        Region.reads[0] = -os.path.getsize(args.file)  # not counted (read by Rust code)
        return
    with open(args.file, "rb") as f:
        obstore.put(
            store,
            args.key,
            CountingFile(f),
            chunk_size=args.part_size,
            max_concurrency=args.concurrency,
        )


class CountingFile(io.RawIOBase):
    """A file object counting the bytes read through it (for obstore, which takes one)."""

    def __init__(self, f: Any):
        super().__init__()
        self.f = f

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return int(self.f.tell())

    def seek(self, pos: int, whence: int = 0) -> int:
        return int(self.f.seek(pos, whence))

    def read(self, n: int | None = -1) -> bytes:
        data = bytes(self.f.read(n))
        Region.reads[0] += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        n = int(self.f.readinto(buffer))
        Region.reads[0] += n
        return n


MEASURE: dict[str, Any] = {}


def start_measuring() -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    MEASURE.update(t0=time.perf_counter(), cpu0=usage.ru_utime + usage.ru_stime)
    MEASURE["rss0"] = usage.ru_maxrss / 1024


def worker(args: argparse.Namespace) -> None:
    variant = VARIANTS[args.worker]
    {"boto3": upload_boto3, "aiobotocore": upload_aiobotocore, "obstore": upload_obstore}[
        variant["lib"]
    ](args, variant)
    elapsed = time.perf_counter() - MEASURE["t0"]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    size = os.path.getsize(args.file)
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "cpu": usage.ru_utime + usage.ru_stime - MEASURE["cpu0"],
                "rss": usage.ru_maxrss / 1024,
                "rss_start": MEASURE["rss0"],
                "reads": Region.reads[0] / size,
                "version": library_version(variant["lib"]),
            }
        )
    )


def library_version(lib: str) -> str:
    from importlib.metadata import version

    names = {"boto3": ["boto3", "botocore"], "aiobotocore": ["aiobotocore", "botocore", "aiohttp"]}
    return " ".join(f"{n} {version(n)}" for n in names.get(lib, [lib]))


# -- the run ------------------------------------------------------------------------------------


def ensure_client_venv() -> Path:
    """aiobotocore and obstore in a scratch venv (never the project's)."""
    python = CLIENT_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(CLIENT_VENV)], check=True)
    check = subprocess.run([str(python), "-c", "import aiobotocore, obstore"], capture_output=True)
    if check.returncode != 0:
        pip = [str(CLIENT_VENV / "bin" / "pip"), "install", "-q"]
        subprocess.run([*pip, "aiobotocore", "obstore"], check=True)
    return python


# bench.py (and s3server.py) are imported where the parent process uses them, not at the top:
# the worker processes must not load them (bench pulls in asyncio, s3server needs httpx), which
# would add to the client RSS they measure or fail in the scratch venv.


def make_data(size: int) -> Path:
    from bench import make_data as write_data

    return write_data(f"{size // MiB}m", size, SCRATCH)


def make_cert() -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (for the sink over https)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert_path, key_path = SCRATCH / "sink-cert.pem", SCRATCH / "sink-key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    SCRATCH.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Target:
    """A local S3 endpoint for one benchmark, on a free port: moto (the tests' server), the sink
    or the sink over https (`sink-tls`); `bucket`, unless None, is created once it answers.
    bench_s3.py's S3Target is one too."""

    client_config: dict[str, Any] = {}  # botocore Config options of client()

    def __init__(self, kind: str, bucket: str | None = BUCKET):
        from bench import free_port

        sys.path.insert(0, str(ROOT / "tests"))  # for s3server
        self.kind = kind
        self.bucket = bucket
        self.port = free_port()
        self.endpoint = ""
        self.ca: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.moto: Any = None

    def start(self) -> None:
        from bench import wait_port

        if self.kind == "moto":
            from s3server import MotoServer

            self.moto = MotoServer(self.port)
            self.moto.start()
            self.proc = self.moto.proc
            self.endpoint = self.moto.endpoint
        else:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--sink", str(self.port)]
            scheme = "http"
            if self.kind == "sink-tls":
                cert, key = make_cert()
                cmd += ["--tls", str(cert), str(key)]
                self.ca, scheme = cert, "https"
            self.proc = subprocess.Popen(cmd, start_new_session=True)
            wait_port(self.port, self.proc)
            self.endpoint = f"{scheme}://127.0.0.1:{self.port}"
        if self.bucket is not None:
            self.client().create_bucket(Bucket=self.bucket)

    def client(self) -> Any:
        from s3server import s3_client

        verify = str(self.ca) if self.ca else None
        return s3_client(self.endpoint, verify=verify, **self.client_config)

    def stop(self) -> None:
        if self.moto is not None:
            self.moto.stop()
        elif self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = self.moto = None


def run_client(name: str, target: Target, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    lib = VARIANTS[name]["lib"]
    python = sys.executable if lib == "boto3" else str(CLIENT_VENV / "bin" / "python")
    key = f"bench-{name}-{uuid.uuid4().hex[:8]}"
    cmd = [python, str(Path(__file__).resolve()), "--worker", name, "--endpoint", target.endpoint]
    cmd += ["--bucket", BUCKET, "--key", key, "--file", str(data)]
    cmd += ["--part-size", str(args.part_size), "--concurrency", str(args.concurrency)]
    if target.ca:
        cmd += ["--ca", str(target.ca)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-1500:])
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    s3 = target.client()
    size = s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"]
    left_open = s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    s3.delete_object(Bucket=BUCKET, Key=key)  # moto keeps objects in memory
    if size != data.stat().st_size or left_open:
        raise RuntimeError(f"object has {size} bytes, {len(left_open)} uploads left open")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", default="sink,moto")
    parser.add_argument("--clients", default=",".join(VARIANTS))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size", type=int, default=1024, help="MiB uploaded per run")
    parser.add_argument("--part-size", type=int, default=50 * MiB)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--keep-data", action="store_true", help="keep the data file")
    # internal: the sink and the worker processes
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tls", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    for name in ("--endpoint", "--bucket", "--key", "--file", "--ca"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        run_sink(args.sink, tuple(args.tls) if args.tls else None)
        return
    if args.worker:
        worker(args)
        return
    clients = args.clients.split(",")
    if any(VARIANTS[c]["lib"] != "boto3" for c in clients):
        ensure_client_venv()
    data = make_data(args.size * MiB)
    rows: list[tuple[str, str, dict[str, Any]]] = []
    try:
        for kind in args.targets.split(","):
            target = Target(kind)
            target.start()
            try:
                runs: dict[str, list[dict[str, Any]]] = {c: [] for c in clients}
                for rep in range(args.repeat):
                    order = clients if rep % 2 == 0 else clients[::-1]  # alternate the order
                    for name in order:
                        try:
                            runs[name].append(run_client(name, target, data, args))
                        except Exception as exc:  # one client failing must not hide the others
                            print(f"  {kind} {name}: FAILED {exc}", flush=True)
                for name in clients:
                    if not runs[name]:
                        continue
                    row = summarize(runs[name], data.stat().st_size)
                    rows.append((kind, name, row))
                    print(
                        f"{kind:8s} {name:17s} {row['mbps']:7.0f} MB/s {row['cpu']:6.2f} CPU-s/GiB"
                        f" {row['rss']:6.0f} MiB (start {row['rss_start']:.0f})"
                        f" reads {reads(row)}"
                        f"  (runs: {cpu_list(runs[name])} CPU-s)",
                        flush=True,
                    )
            finally:
                target.stop()
    finally:
        if not args.keep_data:
            data.unlink(missing_ok=True)
    print()
    print("| S3 server | client | MB/s | client CPU-s/GiB | peak RSS MiB | body reads |")
    print("|---|---|---:|---:|---:|---:|")
    for kind, name, row in rows:
        print(
            f"| {kind} | {name} | {row['mbps']:.0f} | {row['cpu']:.2f} | "
            f"{row['rss']:.0f} ({row['rss_start']:.0f} at start) | {reads(row)} |"
        )
    print()
    versions = {name: runs_version for _, name, r in rows for runs_version in [r["version"]]}
    for name, version in versions.items():
        print(f"{name}: {version}")


def cpu_list(runs: list[dict[str, Any]]) -> str:
    return ", ".join(f"{r['cpu']:.2f}" for r in runs)


def reads(row: dict[str, Any]) -> str:
    return "-" if row["reads"] < 0 else f"{row['reads']:.1f}x"


def summarize(runs: list[dict[str, Any]], size: int) -> dict[str, Any]:
    gib = size / GiB
    return {
        "mbps": statistics.median(size / MiB / r["seconds"] for r in runs),
        "cpu": statistics.median(r["cpu"] / gib for r in runs),
        "rss": max(r["rss"] for r in runs),
        "rss_start": statistics.median(r["rss_start"] for r in runs),
        "reads": statistics.median(r["reads"] for r in runs),
        "version": runs[0]["version"],
    }


if __name__ == "__main__":
    main()
