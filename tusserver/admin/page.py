"""The dashboard page: static HTML whose script (web/static/dashboard.js) fills it from the
admin API; and the page a browser gets without the token, saying how to open the dashboard."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tusserver.admin.api import API_PREFIX
from tusserver.web.pages import page_response, root_of


async def dashboard(request: Request) -> Response:
    """GET <dashboard path>."""
    return page_response(request, "dashboard.html", {"api": root_of(request) + API_PREFIX})


def unauthorized(request: Request) -> Response:
    """401 for a browser: where the token comes from and how to present it."""
    return page_response(
        request,
        "dashboard_unauthorized.html",
        {"path": request.url.path},
        status=401,
    )
