"""Helpers every handler shares: reaching the core, reading headers, building URLs."""

from __future__ import annotations

from starlette.requests import Request

from tusserver.core import TusCore
from tusserver.protocol import TusError, http_date, is_valid_upload_id, parse_non_negative
from tusserver.registry import UploadInfo


def core_of(request: Request) -> TusCore:
    """The TusCore attached to the app by create_app."""
    core: TusCore = request.app.state.core
    return core


def upload_id_of(request: Request) -> str:
    """The id in the URL, validated before it can touch the filesystem (404 otherwise)."""
    upload_id = str(request.path_params["upload_id"])
    if not is_valid_upload_id(upload_id):
        raise TusError(404, "upload not found")
    return upload_id


def optional_int(request: Request, name: str) -> int | None:
    """A non-negative integer header, or None when absent (400 when malformed)."""
    value = request.headers.get(name)
    return None if value is None else parse_non_negative(name, value)


def required_int(request: Request, name: str) -> int:
    """A non-negative integer header that must be present."""
    value = optional_int(request, name)
    if value is None:
        raise TusError(400, f"{name} header missing")
    return value


def expiry_headers(info: UploadInfo) -> dict[str, str]:
    """Upload-Expires for unfinished uploads that will expire (Expiration)."""
    if info.expires is None or info.finished:
        return {}
    return {"Upload-Expires": http_date(info.expires)}


def external_origin(request: Request, behind_proxy: bool) -> str:
    """scheme://host the client used: X-Forwarded-*/Forwarded only when behind a proxy."""
    scheme = request.url.scheme
    host = request.headers.get("host") or request.url.netloc
    if behind_proxy:
        forwarded = _parse_forwarded(request.headers.get("forwarded", ""))
        scheme = (
            forwarded.get("proto") or _first(request.headers.get("x-forwarded-proto")) or scheme
        )
        host = forwarded.get("host") or _first(request.headers.get("x-forwarded-host")) or host
    if scheme not in ("http", "https"):
        scheme = "http"
    return f"{scheme}://{host}"


def mount_root(request: Request) -> str:
    """The mount path of the app in a parent app ('' when it runs on its own), for URLs."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def upload_url(request: Request, upload_id: str) -> str:
    """Absolute URL of an upload, including any mount path (root_path) of a parent app."""
    core = core_of(request)
    origin = external_origin(request, core.settings.behind_proxy)
    return f"{origin}{mount_root(request)}{core.settings.base_path}{upload_id}"


def _first(value: str | None) -> str | None:
    """First entry of a comma-separated proxy header (the client-facing hop)."""
    if not value:
        return None
    return value.split(",")[0].strip() or None


def _parse_forwarded(value: str) -> dict[str, str]:
    """RFC 7239 Forwarded: the first element's proto and host."""
    result: dict[str, str] = {}
    first = value.split(",")[0]
    for pair in first.split(";"):
        key, _, val = pair.strip().partition("=")
        if key.lower() in ("proto", "host") and val:
            result[key.lower()] = val.strip().strip('"')
    return result


async def has_body(request: Request) -> bool:
    """Whether the request carries body bytes: a non-zero Content-Length, or a chunked body
    whose first piece is not already its end (that piece is consumed: only call this when the
    body would be dropped anyway)."""
    declared = optional_int(request, "Content-Length")
    chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
    if declared is not None or not chunked:
        return bool(declared)
    while True:
        message = await request.receive()
        if message["type"] != "http.request":  # the client went away: nothing to refuse
            return False
        if message.get("body") or not message.get("more_body", False):
            return bool(message.get("body"))
