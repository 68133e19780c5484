"""The browser upload page (Uppy with its Tus plugin) and the static assets of both pages."""

from __future__ import annotations

from starlette.routing import BaseRoute

from tusserver.config import Settings

ASSETS_PREFIX = "/_tusserver/"  # static files of the upload page and the dashboard


def routes(settings: Settings) -> list[BaseRoute]:
    """The upload page (unless --disable-web-ui) and the assets it and the dashboard load."""
    if settings.disable_web_ui and not settings.dashboard_path:
        return []
    return []
