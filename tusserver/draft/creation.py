"""Upload creation (draft-01 §4 … -06 §4.2): a request with content to the creation URL."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tusserver.draft.body import check_outcome, complete, limit_of, receive_body, send_104
from tusserver.handlers.common import core_of, has_body, upload_url
from tusserver.hooks import HTTPResponse, apply_response
from tusserver.ietf import (
    Creation,
    IetfError,
    Interop,
    UnknownVersion,
    bad_request,
    creation_interim_headers,
    creation_response_headers,
    inconsistent_length,
    representation_metadata,
)
from tusserver.protocol import TusError, encode_metadata
from tusserver.registry import UploadInfo

PROTOCOL = "ietf-draft"  # the metrics label of uploads created here


async def create(request: Request, creation: Creation) -> Response:
    """201 with Location, Upload-Offset and the completeness field; the upload is announced
    by a 104 before its body is read (see `_store`)."""
    interop = creation.interop
    core = core_of(request)
    info, granted, location = await _store(
        request,
        creation.length,
        creation.content_length,
        creation.metadata,
        interop,
        completes=creation.complete,
    )
    headers = creation_response_headers(
        interop,
        location=location,
        offset=info.offset,
        complete=info.finished,
        limit=limit_of(core, interop, info),
    )
    return await _answer(request, info, granted, interop.creation_status, headers)


async def create_plain(request: Request, unknown: UnknownVersion) -> Response:
    """A complete one-shot upload of an interop version this server does not speak: stored
    like any other upload (201 + Location), with no 104 ("MUST NOT" to an unknown version)."""
    length = unknown.content_length
    metadata = representation_metadata(request.headers)
    info, granted, location = await _store(request, length, length, metadata, None, completes=True)
    return await _answer(request, info, granted, 201, {"Location": location})


async def _answer(
    request: Request, info: UploadInfo, granted: HTTPResponse, status: int, headers: dict[str, str]
) -> Response:
    """The final response, with what pre-create granted; for an upload the request completed
    (all its bytes came with it), pre-finish may add to it and post-finish fires, as for tus."""
    response = apply_response(Response(status_code=status, headers=headers), granted)
    if info.finished:
        response = apply_response(response, await core_of(request).hooks.finished(request, info))
    return response


async def _store(
    request: Request,
    length: int | None,
    content_length: int | None,
    metadata: dict[str, str],
    interop: Interop | None,
    *,
    completes: bool,
) -> tuple[UploadInfo, HTTPResponse, str]:
    """Create the upload (pre-create may refuse it or change its id and metadata), announce it
    with a 104 carrying Location, Upload-Limit and the interop version ("SHOULD announce the
    upload resource by sending an interim response with the 104", -06 §4.2.2), then receive
    the body under the upload's lock, completing the upload if the request `completes` it.
    Returns the upload, what pre-create granted, and the
    absolute Location every response to this request carries (-10 §4.2.2, identical)."""
    core = core_of(request)
    await _admit(request, length, content_length, interop)
    raw = encode_metadata(metadata)
    info = UploadInfo(id=core.new_id(), length=length, metadata_raw=raw or None, metadata=metadata)
    granted = await core.hooks.pre_create(request, info)
    await core.create(info, protocol=PROTOCOL)
    await core.hooks.post_create(request, info)
    location = upload_url(request, info.id)
    # The lock first: once the 104 is out, a HEAD or DELETE on the Location may come at once,
    # and it must find this request holding the upload (its state read under the lock).
    async with core.locked(info.id, receiving=True) as (info, hold):
        try:
            if interop is not None:
                limit = limit_of(core, interop, info)
                await send_104(request, core, creation_interim_headers(interop, location, limit))
            if not info.finished:
                outcome = await receive_body(request, core, info, hold, interop)
                check_outcome(outcome, info)
                if completes:
                    await complete(core, info, interop)
        except (TusError, IetfError) as exc:  # the upload exists: say where it is
            exc.headers.setdefault("Location", location)
            raise
    return info, granted, location


async def _admit(
    request: Request, length: int | None, content_length: int | None, interop: Interop | None
) -> None:
    """What can be refused before an upload is created and a 104 invites the body: no room or
    too many bodies in flight (503/507), a body over --max-size (413), tus concatenation (a
    tus 1.0 feature), and a body for an upload declared empty (read from a chunked body only:
    it would be dropped anyway)."""
    core = core_of(request)
    core.check_capacity()
    if "upload-concat" in request.headers:
        raise bad_request("Upload-Concat is tus 1.0's concatenation; send Tus-Resumable for it")
    limit = core.settings.max_size  # (a body longer than a declared length: classify's)
    if length is None and limit and content_length is not None and content_length > limit:
        raise TusError(413, "request body exceeds the server's maximum upload size")
    if length == 0 and await has_body(request):
        detail = "the upload's length is 0 but the request has a body"
        raise inconsistent_length(interop, detail) if interop else bad_request(detail)
