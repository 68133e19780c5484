"""OPTIONS: what this server supports (Core, "OPTIONS")."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tusserver.config import Settings
from tusserver.handlers.common import core_of
from tusserver.protocol import TUS_VERSION


def extensions(settings: Settings) -> list[str]:
    """Tus-Extension: only what is actually enabled."""
    names = ["creation", "creation-with-upload", "creation-defer-length"]
    if settings.expiration > 0:
        names.append("expiration")
    if not settings.disable_termination:
        names.append("termination")
    return names


def capability_headers(settings: Settings) -> dict[str, str]:
    """Tus-Version, Tus-Extension and, when limited, Tus-Max-Size."""
    headers = {"Tus-Version": TUS_VERSION, "Tus-Extension": ",".join(extensions(settings))}
    if settings.max_size:
        headers["Tus-Max-Size"] = str(settings.max_size)
    return headers


async def handle_options(request: Request) -> Response:
    """204 with the capability headers; Tus-Resumable in the request is ignored."""
    return Response(status_code=204, headers=capability_headers(core_of(request).settings))
