"""OPTIONS: what this server supports (Core, "OPTIONS")."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tusserver.checksum import algorithm_header, request_trailers
from tusserver.config import Settings
from tusserver.handlers.common import core_of
from tusserver.protocol import TUS_VERSION


def extensions(settings: Settings, trailers: bool = False) -> list[str]:
    """Tus-Extension: only what is actually enabled.

    checksum-trailer only when the server running us hands request trailers to the app
    (`trailers`: the tusserver command's uvicorn protocol does, other ASGI servers do not).
    """
    names = ["creation", "creation-with-upload", "creation-defer-length"]
    names += ["checksum", *(["checksum-trailer"] if trailers else [])]
    names += ["concatenation", "concatenation-unfinished"]
    if settings.expiration > 0:
        names.append("expiration")
    if not settings.disable_termination:
        names.append("termination")
    return names


def capability_headers(settings: Settings, trailers: bool = False) -> dict[str, str]:
    """Tus-Version, Tus-Extension, Tus-Checksum-Algorithm and, when limited, Tus-Max-Size."""
    headers = {
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": ",".join(extensions(settings, trailers)),
        "Tus-Checksum-Algorithm": algorithm_header(),
    }
    if settings.max_size:
        headers["Tus-Max-Size"] = str(settings.max_size)
    return headers


async def handle_options(request: Request) -> Response:
    """204 with the capability headers; Tus-Resumable in the request is ignored."""
    trailers = request_trailers(request.scope) is not None
    headers = capability_headers(core_of(request).settings, trailers)
    return Response(status_code=204, headers=headers)
