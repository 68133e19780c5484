"""HTML pages from the package's templates, with the security headers every page carries.

Templates are plain HTML with `{{name}}` placeholders, filled with HTML-escaped values: no
template engine is worth its weight for two pages. The Content-Security-Policy admits only
this server's own scripts, styles and connections: no inline script or style, no CDN, no
framing, so an injected string can neither run nor exfiltrate.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.types import Scope

from tusserver.handlers.common import mount_root

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # a ?token= in the address never leaves in a Referer
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@cache
def template(name: str) -> str:
    """The text of templates/<name>, read once from the installed package."""
    return resources.files("tusserver.web").joinpath("templates", name).read_text("utf-8")


def app_path(scope: Scope) -> str:
    """The request path below the app's mount point (the whole path when not mounted)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def render(name: str, values: Mapping[str, object]) -> str:
    """Fill every {{key}} of the template; a placeholder without a value is a bug (KeyError)."""
    return _PLACEHOLDER.sub(
        lambda m: html.escape(str(values[m.group(1)]), quote=True), template(name)
    )


def page_response(
    request: Request, name: str, values: Mapping[str, object], status: int = 200
) -> HTMLResponse:
    """A page with the security headers; `root` (mount path) and `assets` (URL prefix of the
    static files) are always available to the template."""
    from tusserver.web import ASSETS_PREFIX

    root = mount_root(request)
    filled = render(name, {"root": root, "assets": root + ASSETS_PREFIX, **values})
    return HTMLResponse(filled, status_code=status, headers=SECURITY_HEADERS)
