"""The admin dashboard page and its JSON API (`/admin/api/…`), guarded by the admin token.

These routes are the operators', not the tus clients': they sit outside the tus CORS rules
(never readable cross-origin, whatever `--cors-*` says) and outside the Tus-Resumable check.
They read the registry only, so every worker and instance answers the same.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.routing import BaseRoute
from starlette.types import Scope

from tusserver.config import Settings

API_PREFIX = "/admin/api/"


def routes(settings: Settings) -> list[BaseRoute]:
    """The dashboard page and the admin API, or none when `--dashboard-path ''`."""
    if not settings.dashboard_path:
        return []
    return []


def is_private(settings: Settings) -> Callable[[Scope], bool]:
    """Predicate for the tus-wide middlewares: whether a request is for the dashboard or the
    admin API (path relative to any mount point), which those middlewares leave alone."""
    dashboard = settings.dashboard_path
    if not dashboard:
        return lambda scope: False

    def private(scope: Scope) -> bool:
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        return path == dashboard or path.startswith(API_PREFIX)

    return private
