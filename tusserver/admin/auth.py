"""Who may use the dashboard and the admin API: the holder of the admin token.

The token arrives as `Authorization: Bearer <token>` (scripts) or once as `?token=<token>`,
which is exchanged for a cookie (browsers): HttpOnly, so page scripts never see it, and
SameSite=Strict, so other sites' pages never send it. The cookie holds an HMAC of the token,
not the token: it works on every worker and instance that shares the token, and a leaked
cookie does not reveal the token for Bearer use. A cookie is sent by the browser whoever
caused the request, so state-changing requests authenticated by it must also come from the
server's own origin (CSRF); a Bearer header can only be set by code that knows the token.
Every comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
from enum import Enum
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from tusserver.handlers.common import external_origin
from tusserver.web.pages import root_of

COOKIE = "tusserver_admin"
TOKEN_PARAM = "token"
SAFE_METHODS = ("GET", "HEAD")
_COOKIE_LABEL = b"tusserver admin cookie v1"


class Access(Enum):
    """The verdict on one request."""

    GRANTED = 200
    UNAUTHENTICATED = 401
    CROSS_SITE = 403


def _equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def cookie_value(token: str) -> str:
    """What the cookie holds for `token`: the same on every process that shares the token."""
    return hmac.new(token.encode(), _COOKIE_LABEL, hashlib.sha256).hexdigest()


def _bearer(request: Request) -> str | None:
    """The token of an `Authorization: Bearer` header, None without one."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def _same_origin(request: Request, behind_proxy: bool) -> bool:
    """The browser says the request comes from a page of this server."""
    if request.headers.get("sec-fetch-site") == "same-origin":
        return True
    origin = request.headers.get("origin")
    return origin is not None and origin == external_origin(request, behind_proxy)


def access(request: Request, token: str, behind_proxy: bool) -> Access:
    """Bearer decides when present; else the cookie, plus same-origin for state changes."""
    if not token:  # never configured nor generated: nothing can match
        return Access.UNAUTHENTICATED
    bearer = _bearer(request)
    if bearer is not None:
        return Access.GRANTED if _equal(bearer, token) else Access.UNAUTHENTICATED
    if not _equal(request.cookies.get(COOKIE, ""), cookie_value(token)):
        return Access.UNAUTHENTICATED
    if request.method in SAFE_METHODS or _same_origin(request, behind_proxy):
        return Access.GRANTED
    return Access.CROSS_SITE


def offered_token(request: Request) -> str | None:
    """A `?token=` to exchange for the cookie (GET only: a link someone opens)."""
    return request.query_params.get(TOKEN_PARAM) if request.method == "GET" else None


def token_matches(given: str, token: str) -> bool:
    return bool(token) and _equal(given, token)


def login(request: Request, token: str, behind_proxy: bool) -> Response:
    """303 to the same URL without the token (out of the address bar and history), setting
    the cookie for the app's whole mount path."""
    query = [(k, v) for k, v in request.query_params.multi_items() if k != TOKEN_PARAM]
    location = request.url.path + (f"?{urlencode(query)}" if query else "")
    response = Response(
        status_code=303, headers={"Location": location, "Cache-Control": "no-store"}
    )
    response.set_cookie(
        COOKIE,
        cookie_value(token),
        path=root_of(request) + "/",
        secure=external_origin(request, behind_proxy).startswith("https:"),
        httponly=True,
        samesite="strict",
    )
    return response
