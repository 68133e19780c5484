"""OPTIONS: what this server supports (Core, "OPTIONS")."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tusserver.checksum import algorithm_header, request_trailers
from tusserver.config import Settings
from tusserver.handlers.common import core_of
from tusserver.protocol import TUS_VERSION
from tusserver.storage import Store


def extensions(settings: Settings, trailers: bool, store: Store) -> list[str]:
    """Tus-Extension: only what is actually enabled.

    checksum-trailer only when the server running us hands request trailers to the app
    (`trailers`: the tusserver command's uvicorn protocol does, other ASGI servers do not);
    concatenation only when the store can join uploads (`can_concat`).
    """
    names = ["creation", "creation-with-upload", "creation-defer-length"]
    names += ["checksum", *(["checksum-trailer"] if trailers else [])]
    if store.can_concat:
        names += ["concatenation", "concatenation-unfinished"]
    if settings.expiration > 0:
        names.append("expiration")
    if not settings.disable_termination:
        names.append("termination")
    return names


def capability_headers(settings: Settings, trailers: bool, store: Store) -> dict[str, str]:
    """Tus-Version, Tus-Extension, Tus-Checksum-Algorithm and, when limited, Tus-Max-Size."""
    headers = {
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": ",".join(extensions(settings, trailers, store)),
        "Tus-Checksum-Algorithm": algorithm_header(),
    }
    if settings.max_size:
        headers["Tus-Max-Size"] = str(settings.max_size)
    return headers


async def handle_options(request: Request) -> Response:
    """204 with the capability headers; Tus-Resumable in the request is ignored."""
    core = core_of(request)
    trailers = request_trailers(request.scope) is not None
    return Response(
        status_code=204, headers=capability_headers(core.settings, trailers, core.store)
    )
