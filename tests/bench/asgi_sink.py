"""Bare ASGI tus sink on uvicorn: what the ASGI stack itself costs (benchmark ceiling only).

POST creates an empty file, PATCH appends each body message to it, HEAD reports the size.
No validation, no registry, no fsync. Run: `uvicorn tests.bench.asgi_sink:app` with
SINK_DIR set.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

DIRECTORY = os.environ.get("SINK_DIR", "/tmp/asgi-sink")
os.makedirs(DIRECTORY, exist_ok=True)
_ids = itertools.count(1)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    method = scope["method"]
    name = scope["path"].rstrip("/").rsplit("/", 1)[-1]
    headers: list[tuple[bytes, bytes]] = [(b"tus-resumable", b"1.0.0")]
    if method == "POST":
        name = str(next(_ids))
        open(os.path.join(DIRECTORY, name), "wb").close()
        host = dict(scope["headers"]).get(b"host", b"127.0.0.1").decode()
        headers.append((b"location", f"http://{host}/files/{name}".encode()))
        status = 201
    elif method == "PATCH":
        fd = os.open(os.path.join(DIRECTORY, name), os.O_WRONLY | os.O_APPEND)
        try:
            while True:
                message = await receive()
                os.write(fd, message.get("body", b""))
                if not message.get("more_body"):
                    break
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        headers.append((b"upload-offset", str(size).encode()))
        status = 204
    else:
        size = os.path.getsize(os.path.join(DIRECTORY, name))
        headers += [(b"upload-offset", str(size).encode()), (b"upload-length", str(size).encode())]
        status = 200
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
