"""The IETF resumable-upload draft's HTTP front, beside tus 1.0 on the same endpoint.

A request that carries `Upload-Draft-Interop-Version` and no `Tus-Resumable` is an IETF request
(iOS 17+ URLSession, tus-js-client's `ietf-draft-*` protocols). `serve` classifies it with the
pure rules of tusserver.ietf and runs it on the same core, store, registry, locks, hooks and
processing as a tus request: an upload created one way can be resumed, downloaded and processed
like any other. Nothing here names a backend.

Errors: the draft's refusals (IetfError) are answered as its version wants (plain text up to
interop 5, RFC 9457 problem documents from 6); the core's own errors (TusError: 404, 410, 503,
507, hook rejections) keep their short plain-text answers, with the completeness field added
where the version asks every response about the upload to carry it.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tusserver.config import Settings
from tusserver.draft.creation import create, create_plain
from tusserver.draft.resource import append, cancel, options, retrieve_offset
from tusserver.ietf import (
    INTEROP_HEADER,
    INTEROP_VERSIONS,
    Append,
    Cancellation,
    Creation,
    IetfError,
    Interop,
    OffsetRetrieval,
    Options,
    classify,
    fold_headers,
    parse_interop_version,
)
from tusserver.protocol import TusError


def versions(settings: Settings) -> dict[int, Interop]:
    """The interop versions served (--ietf-draft-versions; validated at start)."""
    return {int(value): INTEROP_VERSIONS[int(value)] for value in settings.ietf_draft_versions}


# Set in the ASGI scope by app.TusMiddleware on a request for this front: the draft is on and
# the request carries Upload-Draft-Interop-Version and no Tus-Resumable.
SCOPE_KEY = "tusserver.draft"


async def serve(request: Request, settings: Settings, *, upload_url: bool) -> Response | None:
    """Answer an IETF request, or None when the draft defines nothing for this method at this
    URL (a GET download, say): the tus handlers serve it then."""
    served = versions(settings)
    interop = _interop_of(request, served)
    appending = upload_url and request.method == "PATCH"
    try:
        kind = classify(
            request.method, upload_url=upload_url, headers=request.headers, versions=served
        )
        if kind is None:
            return None
        if isinstance(kind, Creation):
            return await create(request, kind)
        if isinstance(kind, Append):
            return await append(request, kind)
        if isinstance(kind, OffsetRetrieval):
            return await retrieve_offset(request, kind)
        if isinstance(kind, Cancellation):
            return await cancel(request)
        if isinstance(kind, Options):
            return await options(request, kind)
        if kind.one_shot:  # an unknown version: a complete upload is still a plain upload
            return await create_plain(request, kind)
        raise kind.error()
    except IetfError as exc:
        _mark_incomplete(interop, exc.headers, appending=appending)
        rendered = exc.render(interop)
        return Response(rendered.body, rendered.status, rendered.headers)
    except TusError as exc:
        _mark_incomplete(interop, exc.headers, appending=appending)
        if type(exc) is TusError and exc.status == 410 and interop and interop.inactive_not_found:
            raise TusError(404, exc.message, exc.headers) from None  # -01…-05 §5-§7: 404
        raise


def _mark_incomplete(interop: Interop | None, headers: dict[str, str], *, appending: bool) -> None:
    """An error about an unfinished upload (it names the offset to resume from), or any error
    answering an append, says the upload is incomplete in the versions that want it: "If the
    request didn't complete the upload, any response, successful or not, MUST include the
    Upload-Complete header field with a false value" (-06 §4.4.2). That covers an append
    refused before it was looked at (malformed, 415) too: it completed nothing."""
    if interop is None or not interop.append_errors_incomplete:
        return
    if appending or "Upload-Offset" in headers:
        headers.setdefault(interop.complete_field, interop.complete_value(False))


def _interop_of(request: Request, served: dict[int, Interop]) -> Interop | None:
    """The request's interop version if it is served (for rendering its errors)."""
    raw = fold_headers(request.headers).get(INTEROP_HEADER.lower())  # repeats: invalid
    number = parse_interop_version(raw) if raw is not None else None
    return served.get(number) if number is not None else None


__all__ = ["SCOPE_KEY", "serve", "versions"]
