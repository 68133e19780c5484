"""GET: download a finished upload (not part of tus; what tusd and users expect).

The bytes come through the store's reader, never a local path, so every backend serves
downloads the same way; one byte range (RFC 9110 §14) is served when asked for.
"""

from __future__ import annotations

from urllib.parse import quote

import anyio.to_thread
from starlette.concurrency import iterate_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from tusserver.handlers.common import core_of, upload_id_of
from tusserver.protocol import TusError, safe_mime_type
from tusserver.ranges import Unsatisfiable, byte_range
from tusserver.storage import Reader

# Types a browser may render inline without risk of running script (as tusd allows).
INLINE_TYPES = frozenset(
    {
        "text/plain",
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/bmp",
        "image/webp",
        "audio/wave",
        "audio/wav",
        "audio/x-wav",
        "audio/x-pn-wav",
        "audio/webm",
        "audio/ogg",
        "video/webm",
        "video/ogg",
        "video/mp4",
        "application/ogg",
        "application/pdf",
    }
)


class ReaderResponse(StreamingResponse):
    """Streams a store reader, one chunk per worker-thread call (reads block); the reader is
    closed however the response ends, also when the client goes away mid-body."""

    def __init__(self, reader: Reader, status_code: int, headers: dict[str, str], media_type: str):
        super().__init__(iterate_in_threadpool(reader), status_code, headers, media_type)
        self.reader = reader

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # a read in flight has returned by now: cancelling a worker-thread call waits for it
            self.reader.close()


async def handle_get(request: Request) -> Response:
    """The bytes, with Range support, a safe Content-Type and Content-Disposition."""
    core = core_of(request)
    info = await core.load(upload_id_of(request))
    if not info.finished:
        raise TusError(409, "upload is not finished yet")
    url = await anyio.to_thread.run_sync(core.store.download_url, info.id)
    if url is not None:  # the store serves it itself (S3 presigned downloads); Range goes along
        return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    size = info.offset
    media_type = safe_mime_type(info.metadata.get("filetype") or info.metadata.get("type"))
    media_type = media_type or "application/octet-stream"
    filename = info.metadata.get("filename") or info.metadata.get("name") or info.id
    headers = {
        "Accept-Ranges": "bytes",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    }
    try:
        wanted = byte_range(request.headers.get("range"), size)
    except Unsatisfiable:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    start, end = wanted or (0, size)
    headers["Content-Length"] = str(end - start)
    headers["Content-Disposition"] = _content_disposition(
        "inline" if media_type in INLINE_TYPES else "attachment", _clean_filename(filename)
    )
    if wanted is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    try:
        reader = await anyio.to_thread.run_sync(core.store.reader, info.id, start, end)
    except FileNotFoundError:
        await core.load(info.id)  # removed since it was loaded (DELETE, expiry): 404/410
        # still there: the store has not assembled it yet (its finish is pending)
        raise TusError(
            503, "upload is being assembled; retry later", {"Retry-After": "2"}
        ) from None
    return ReaderResponse(reader, 200 if wanted is None else 206, headers, media_type)


def _clean_filename(name: str) -> str:
    """Last path component only, no control characters (header smuggling guard)."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(ch for ch in name if ch.isprintable() and ch not in '"')
    return cleaned or "download"


def _content_disposition(kind: str, filename: str) -> str:
    """As starlette's FileResponse writes it: a plain quoted filename when it needs no
    escaping, else only the RFC 5987 `filename*` form (UTF-8, percent-encoded)."""
    quoted = quote(filename)
    if quoted != filename:
        return f"{kind}; filename*=utf-8''{quoted}"
    return f'{kind}; filename="{filename}"'
