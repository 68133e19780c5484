"""The dashboard page: static HTML whose script (web/static/dashboard.js) fills it from the
admin API; the page a browser gets without the token, saying how to open the dashboard; and
the page that answers `?token=`, setting the cookie and moving on to the dashboard."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tusserver.admin import auth
from tusserver.admin.api import API_PREFIX
from tusserver.handlers.common import mount_root
from tusserver.web.pages import page_response


async def dashboard(request: Request) -> Response:
    """GET <dashboard path>."""
    return page_response(request, "dashboard.html", {"api": mount_root(request) + API_PREFIX})


def unauthorized(request: Request) -> Response:
    """401 for a browser: where the token comes from and how to present it."""
    return page_response(
        request,
        "dashboard_unauthorized.html",
        {"path": request.url.path},
        status=401,
    )


def login(request: Request, token: str, behind_proxy: bool) -> Response:
    """GET <dashboard path>?token=: 200, setting the cookie, with a page that moves on to the
    same address without the token (meta refresh, and a link).

    Not a redirect: after a link on another site (a log viewer, a chat) the whole redirect
    chain counts as cross-site, so the browser would not send the SameSite=Strict cookie on
    the redirected request. A navigation started by this page of ours is same-site."""
    response = page_response(request, "dashboard_login.html", {"next": auth.without_token(request)})
    auth.set_cookie(response, request, token, behind_proxy)
    return response
