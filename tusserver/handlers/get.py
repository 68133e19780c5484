"""GET: download a finished upload (not part of tus; what tusd and users expect)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from tusserver.handlers.common import core_of, upload_id_of
from tusserver.protocol import TusError, safe_mime_type

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


async def handle_get(request: Request) -> Response:
    """The bytes, with Range support, a safe Content-Type and Content-Disposition."""
    core = core_of(request)
    info = core.load(upload_id_of(request))
    if not info.finished:
        raise TusError(409, "upload is not finished yet")
    media_type = safe_mime_type(info.metadata.get("filetype") or info.metadata.get("type"))
    media_type = media_type or "application/octet-stream"
    disposition = "inline" if media_type in INLINE_TYPES else "attachment"
    filename = info.metadata.get("filename") or info.metadata.get("name") or info.id
    return FileResponse(
        core.store.path(info.id),
        media_type=media_type,
        filename=_clean_filename(filename),
        content_disposition_type=disposition,
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"},
    )


def _clean_filename(name: str) -> str:
    """Last path component only, no control characters (header smuggling guard)."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(ch for ch in name if ch.isprintable() and ch not in '"')
    return cleaned or "download"
