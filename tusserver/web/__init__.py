"""The browser upload page (Uppy with its Tus plugin) and the static assets of both pages.

The page is plain HTML from templates/upload.html; its script (static/upload.js) reads the
server's settings from `data-*` attributes, since the Content-Security-Policy allows no inline
script. Uppy comes from vendor/, the published npm build kept in the package: nothing is
fetched from a CDN and no Node is needed to install or run the server.

Assets are read from the installed package once, on first request, and kept in memory with
their gzip form (the Uppy bundle is 580 KiB, 173 KiB gzipped), made on a worker thread: no
request pays for compression and the event loop never does. Their URLs carry no version, so
browsers revalidate each use (`no-cache`) and get a `304` while the ETag (a hash of the
content) still matches.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Scope

from tusserver.config import Settings
from tusserver.web.pages import app_path, page_response

ASSETS_PREFIX = "/_tusserver/"  # static files of the upload page and the dashboard
ASSET_DIRS = ("static", "vendor")  # served as /_tusserver/<name> and /_tusserver/vendor/<name>
MEDIA_TYPES = {  # all text: each is sent gzipped to browsers that accept it
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
ASSET_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


@dataclass(frozen=True)
class Asset:
    """One static file as served: its bytes, gzip form (when that is smaller) and ETags."""

    body: bytes
    gzipped: bytes | None
    media_type: str
    etag: str

    def pick(self, request: Request) -> tuple[bytes, str, dict[str, str]]:
        """Body, ETag and extra headers for this request (gzip when the browser takes it)."""
        if self.gzipped is not None and accepts_gzip(request.headers.get("accept-encoding")):
            return self.gzipped, self.etag[:-1] + '-gz"', {"Content-Encoding": "gzip"}
        return self.body, self.etag, {}


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an Accept-Encoding header admits gzip: named (or `*`) with a q above 0."""
    weights = {}
    for item in (accept_encoding or "").split(","):
        coding, _, params = item.partition(";")
        q = params.strip().lower().removeprefix("q=")
        try:
            weights[coding.strip().lower()] = float(q) if q else 1.0
        except ValueError:
            weights[coding.strip().lower()] = 0.0
    return weights.get("gzip", weights.get("*", 0.0)) > 0


@cache
def asset_table() -> dict[str, str]:
    """URL name (below ASSETS_PREFIX) -> package-relative path of every servable file."""
    root = resources.files("tusserver.web")
    table = {}
    for directory in ASSET_DIRS:
        prefix = "" if directory == "static" else directory + "/"
        folder = root.joinpath(directory)
        if not folder.is_dir():
            continue
        for item in folder.iterdir():
            suffix = "." + item.name.rpartition(".")[2]
            if item.is_file() and suffix in MEDIA_TYPES:
                table[prefix + item.name] = f"{directory}/{item.name}"
    return table


@cache
def load_asset(name: str) -> Asset:
    """The asset served as ASSETS_PREFIX + name (a key of asset_table()), read once."""
    relative = asset_table()[name]
    body = resources.files("tusserver.web").joinpath(relative).read_bytes()
    media_type = MEDIA_TYPES["." + name.rpartition(".")[2]]
    packed = gzip.compress(body, compresslevel=9, mtime=0)
    gzipped = packed if len(packed) < len(body) else None
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return Asset(body, gzipped, media_type, etag)


def not_modified(request: Request, etag: str) -> bool:
    """Whether If-None-Match names this representation (weak comparison, as RFC 9110 says)."""
    header = request.headers.get("if-none-match")
    if header is None:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in tags or etag in tags


async def asset_endpoint(request: Request) -> Response:
    """GET ASSETS_PREFIX + name: a file of static/ or vendor/, 304 when unchanged."""
    name = request.path_params["name"]
    if name not in asset_table():  # before the cache: unknown names must not fill it
        return Response("not found\n", 404, media_type="text/plain")
    asset = await anyio.to_thread.run_sync(load_asset, name)
    body, etag, encoding = asset.pick(request)
    headers = {**ASSET_HEADERS, "ETag": etag, "Vary": "Accept-Encoding"}
    if not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, headers={**headers, **encoding}, media_type=asset.media_type)


def human_size(size: int) -> str:
    """Bytes as people read them: 5 GiB, 1.5 MiB, 512 bytes."""
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    number = f"{value:.1f}".removesuffix(".0") if unit != "bytes" else str(size)
    return f"{number} {unit}"


def page_values(settings: Settings) -> dict[str, object]:
    """What the upload page shows and hands its script: limits, types, processing."""
    plugins = settings.plugins
    types = settings.validate_allowed_types if "validate" in plugins else []
    return {
        "base_path": settings.base_path,
        "max_size": settings.max_size,
        "max_size_text": human_size(settings.max_size) if settings.max_size else "no limit",
        "allowed_types": ",".join(types),
        "allowed_types_text": ", ".join(types) if types else "any type",
        "plugins": ",".join(plugins),
        "processing_text": (
            "on: " + ", ".join(plugins) + " (status shown below after each upload)"
            if plugins
            else "off: files are stored as they are, nothing is checked or parsed"
        ),
    }


def upload_page(settings: Settings) -> Route:
    """GET web_ui_path: the Uppy upload page."""
    values = page_values(settings)

    async def endpoint(request: Request) -> Response:
        return page_response(request, "upload.html", values)

    return Route(settings.web_ui_path, endpoint, methods=["GET"])


def routes(settings: Settings) -> list[BaseRoute]:
    """The upload page (unless --disable-web-ui) and the assets it and the dashboard load."""
    if settings.disable_web_ui and not settings.dashboard_path:
        return []
    assets = Route(ASSETS_PREFIX + "{name:path}", asset_endpoint, methods=["GET"])
    if settings.disable_web_ui:
        return [assets]
    return [upload_page(settings), assets]


def is_page(settings: Settings) -> Callable[[Scope], bool]:
    """Predicate for the Tus-Resumable check: GET/HEAD of the upload page or an asset is a
    browser's page load, not a tus request (a creation POST to the same path still is)."""
    page = None if settings.disable_web_ui else settings.web_ui_path

    def browsing(scope: Scope) -> bool:
        if scope["method"] not in ("GET", "HEAD"):
            return False
        path = app_path(scope)
        return path == page or path.startswith(ASSETS_PREFIX)

    return browsing
