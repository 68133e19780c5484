"""The dashboard page and its JSON API (`/admin/api/…`), guarded by the admin token.

These routes are the operators', not the tus clients': they sit outside the tus CORS rules
(never readable cross-origin, whatever `--cors-*` says) and outside the Tus-Resumable check.
Listings, details and totals come from the shared registry, so every worker and instance
answers them alike; only `free_bytes` in the stats is local (the free space of the store as
the answering instance sees it: its own disk for the file store). Two routes write:
terminate (as a tus DELETE would, on whichever instance) and reprocess (queues the job again).

auth.py decides who gets in, api.py answers the JSON API, events.py streams the live view,
page.py serves the pages (the dashboard's script and styles are web/static/dashboard.*).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Scope

from tusserver.admin import api, auth, events, page
from tusserver.admin.api import API_PREFIX
from tusserver.config import Settings
from tusserver.core import unavailable
from tusserver.errors import BackendUnavailable
from tusserver.handlers.common import core_of
from tusserver.protocol import TusError
from tusserver.web.pages import app_path

Handler = Callable[[Request], Awaitable[Response]]
Refusal = Callable[[Request], Response]
Login = Callable[[Request, str, bool], Response]
# what a browser can use in place of a wildcard listening address
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}
EVERY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]


def ensure_token(settings: Settings) -> str | None:
    """Generate the admin token when the dashboard is on and none is configured; returns it
    (None when nothing was generated). Call once per command, before workers start, so all
    of them share it through the settings."""
    if not settings.dashboard_path or settings.admin_token:
        return None
    settings.admin_token = secrets.token_urlsafe(32)
    return settings.admin_token


def browsable(origin: str) -> str:
    """`origin` with a wildcard listening address (0.0.0.0, ::) replaced by the loopback
    one, which a browser on this host can open (as Jupyter does)."""
    scheme, sep, rest = origin.partition("://")
    if not sep:
        return origin
    host, colon, port = rest.rpartition(":")
    if not colon or not port.isdigit():
        host, colon, port = rest, "", ""
    return f"{scheme}://{_WILDCARDS.get(host, host)}{colon}{port}"


def dashboard_line(settings: Settings, generated: bool, origin: str = "") -> str:
    """The log line saying where the dashboard is (with the token only if it was generated:
    a configured one is known to whoever configured it, and logs travel further). Without
    `origin` (an app built by create_app, which cannot know where it will be mounted) the
    path is relative to the mount path."""
    address = (browsable(origin) if origin else "") + settings.dashboard_path
    if generated:
        address += f"?{auth.TOKEN_PARAM}={settings.admin_token}"
    else:
        address += " (token from --admin-token)"
    return f"dashboard: {address}" + ("" if origin else " (below the app's mount path)")


def api_unauthorized(request: Request) -> Response:
    return api.json_error(401, "admin token required")


def guarded(
    settings: Settings,
    table: Mapping[str, Handler],
    refuse: Refusal = api_unauthorized,
    login: Login = auth.login,
    *,
    start: bool = True,
) -> Handler:
    """One endpoint per path: method (405 before anything, so a CORS preflight learns
    nothing), then the token (`refuse` answers 401; `login` answers a right ?token=), then
    the handler, whose errors become `{"error": …}`. `start`: the handler reads the backends,
    so they are started first (a mounted app gets no lifespan); the page needs none."""
    allow = ", ".join(sorted(table))

    async def endpoint(request: Request) -> Response:
        handler = table.get(request.method)
        if handler is None:
            return api.json_error(405, f"method {request.method} not allowed", {"Allow": allow})
        token, proxied = settings.admin_token, settings.behind_proxy
        offered = auth.offered_token(request)
        if offered is not None and auth.token_matches(offered, token):
            return login(request, token, proxied)
        verdict = auth.access(request, token, proxied) if offered is None else None
        if verdict is auth.Access.CROSS_SITE:
            return api.json_error(403, "cross-site request refused (same origin or Bearer only)")
        if verdict is not auth.Access.GRANTED:
            response = refuse(request)
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        try:
            if start:
                await core_of(request).start()  # first use of a mounted app (no lifespan)
            return await handler(request)
        except BackendUnavailable as exc:
            error = unavailable(exc)
        except TusError as exc:
            error = exc
        return api.json_error(error.status, error.message, error.headers)

    return endpoint


def routes(settings: Settings) -> list[BaseRoute]:
    """The dashboard page and the admin API, or none when `--dashboard-path ''`."""
    if not settings.dashboard_path:
        return []
    table: dict[str, dict[str, Handler]] = {
        "uploads": {"GET": api.list_uploads},
        "uploads/{upload_id}": {"GET": api.upload_detail, "DELETE": api.terminate_upload},
        "uploads/{upload_id}/terminate": {"POST": api.terminate_upload},
        "uploads/{upload_id}/reprocess": {"POST": api.reprocess},
        "stats": {"GET": api.storage_stats},
        "events": {"GET": events.handle_events},
        "{rest:path}": {method: api.not_found for method in EVERY_METHOD},
    }
    dashboard = guarded(
        settings, {"GET": page.dashboard}, page.unauthorized, page.login, start=False
    )
    return [
        Route(settings.dashboard_path, dashboard, methods=EVERY_METHOD),
        *(
            Route(API_PREFIX + path, guarded(settings, handlers), methods=EVERY_METHOD)
            for path, handlers in table.items()
        ),
    ]


def is_private(settings: Settings) -> Callable[[Scope], bool]:
    """Predicate for the tus-wide middlewares: whether a request is for the dashboard or the
    admin API (path relative to any mount point), which those middlewares leave alone."""
    dashboard = settings.dashboard_path
    if not dashboard:
        return lambda scope: False

    def private(scope: Scope) -> bool:
        path = app_path(scope)
        return path == dashboard or path.startswith(API_PREFIX)

    return private


__all__ = ["API_PREFIX", "dashboard_line", "ensure_token", "is_private", "routes"]
