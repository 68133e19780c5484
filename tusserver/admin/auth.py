"""Who may use the dashboard and the admin API: the holder of the admin token.

The token arrives as `Authorization: Bearer <token>` (scripts) or once as `?token=<token>`,
which is exchanged for a cookie (browsers): HttpOnly, so page scripts never see it, and
SameSite=Strict, so other sites' pages never send it. The cookie holds the time it was issued
and an HMAC of that time keyed by the token, not the token: it works on every worker and
instance that shares the token, a leaked cookie does not reveal the token for Bearer use, and
it is refused COOKIE_MAX_AGE after it was issued (a leaked cookie is no permanent credential).
Its name is derived from the token, so two servers on one host (cookies ignore ports) keep
one cookie each instead of overwriting each other's. A cookie is sent by the browser whoever
caused the request, so state-changing requests authenticated by it must also come from the
server's own origin (CSRF); a Bearer header can only be set by code that knows the token.
Every comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from enum import Enum
from urllib.parse import quote, quote_from_bytes, unquote_to_bytes

from starlette.requests import Request
from starlette.responses import Response

from tusserver.handlers.common import external_origin, mount_root

COOKIE_PREFIX = "tusserver_admin_"
COOKIE_MAX_AGE = 7 * 24 * 3600  # seconds a cookie is accepted after it was issued
CLOCK_SKEW = 300  # seconds a cookie may seem issued in the future (instances' clocks differ)
TOKEN_PARAM = "token"
_TOKEN_KEY = TOKEN_PARAM.encode()
SAFE_METHODS = ("GET", "HEAD")
_COOKIE_LABEL = b"tusserver admin cookie v2:"
# what a redirect's Location keeps as is; every other byte is percent-encoded
_URL_SAFE = "/?&=%+:@!$'()*,;~"


class Access(Enum):
    """The verdict on one request."""

    GRANTED = 200
    UNAUTHENTICATED = 401
    CROSS_SITE = 403


def _equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def cookie_name(token: str) -> str:
    """The cookie's name for `token`: one per token, so servers on one host keep theirs."""
    digest = hashlib.sha256(("tusserver-cookie-name:" + token).encode()).hexdigest()
    return COOKIE_PREFIX + digest[:10]


def cookie_value(token: str, issued: int) -> str:
    """What the cookie holds for `token` when issued at `issued` (epoch seconds):
    `<issued>.<HMAC>`, the same on every process that shares the token."""
    mac = hmac.new(token.encode(), _COOKIE_LABEL + str(issued).encode(), hashlib.sha256)
    return f"{issued}.{mac.hexdigest()}"


def cookie_valid(value: str, token: str, now: float | None = None) -> bool:
    """The cookie was issued for `token` less than COOKIE_MAX_AGE ago."""
    issued_text, dot, _ = value.partition(".")
    if not dot or not issued_text.isdigit() or len(issued_text) > 12:
        return False
    issued = int(issued_text)
    if not _equal(value, cookie_value(token, issued)):
        return False
    now = time.time() if now is None else now
    return now - COOKIE_MAX_AGE < issued <= now + CLOCK_SKEW


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
    if not cookie_valid(request.cookies.get(cookie_name(token), ""), token):
        return Access.UNAUTHENTICATED
    if request.method in SAFE_METHODS or _same_origin(request, behind_proxy):
        return Access.GRANTED
    return Access.CROSS_SITE


def offered_token(request: Request) -> str | None:
    """A `?token=` to exchange for the cookie (GET only: a link someone opens)."""
    return request.query_params.get(TOKEN_PARAM) if request.method == "GET" else None


def token_matches(given: str, token: str) -> bool:
    return bool(token) and _equal(given, token)


def without_token(request: Request) -> str:
    """The request's URL (path and query, as the client sent them) without `?token=`: where
    a login goes next. Built from the raw bytes, percent-encoded where needed, so any path
    gives a valid header value (a decoded path may hold characters latin-1 cannot encode)."""
    scope = request.scope
    raw_path: bytes | None = scope.get("raw_path")
    path = quote(scope["path"]) if raw_path is None else quote_from_bytes(raw_path, _URL_SAFE)
    root = str(scope.get("root_path", ""))
    if raw_path is not None and root and not path.startswith(quote(root)):
        path = quote(root) + path  # a proxy stripped the mount path (uvicorn --root-path)
    if path.startswith("//"):  # never a scheme-relative URL (another host)
        path = "/" + path.lstrip("/")
    kept = [
        part
        for part in bytes(scope.get("query_string", b"")).split(b"&")
        if part and unquote_to_bytes(part.split(b"=", 1)[0].replace(b"+", b" ")) != _TOKEN_KEY
    ]
    query = quote_from_bytes(b"&".join(kept), _URL_SAFE)
    return path + (f"?{query}" if query else "")


def set_cookie(response: Response, request: Request, token: str, behind_proxy: bool) -> None:
    """Set the cookie on `response`, for the app's whole mount path."""
    response.set_cookie(
        cookie_name(token),
        cookie_value(token, int(time.time())),
        max_age=COOKIE_MAX_AGE,
        path=mount_root(request) + "/",
        secure=external_origin(request, behind_proxy).startswith("https:"),
        httponly=True,
        samesite="strict",
    )


def login(request: Request, token: str, behind_proxy: bool) -> Response:
    """For the API: 303 to the same URL without the token (out of the address bar and
    history), setting the cookie. The dashboard page answers with a page instead (see
    page.login: after a cross-site link the redirected request would lack the cookie)."""
    headers = {"Location": without_token(request), "Cache-Control": "no-store"}
    response = Response(status_code=303, headers=headers)
    set_cookie(response, request, token, behind_proxy)
    return response
