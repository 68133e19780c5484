"""Requests to an upload resource: append (PATCH), offset retrieval (HEAD), cancellation
(DELETE), and OPTIONS discovery. Each holds the upload's lock like its tus counterpart, so a
new request takes over from a stale one ("terminating the previous request before processing
the new request", -06 §4.6) and reads an offset that the next append will be accepted at."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tusserver.concat import assemble_if_ready, partial_finished
from tusserver.draft.body import check_outcome, complete, limit_of, receive_body, too_large
from tusserver.handlers.common import core_of, upload_id_of
from tusserver.handlers.delete import terminate
from tusserver.handlers.options import handle_options
from tusserver.hooks import apply_response
from tusserver.ietf import (
    Append,
    Interop,
    OffsetRetrieval,
    Options,
    append_response_headers,
    check_recorded_length,
    completed_upload,
    mismatching_offset,
    offset_retrieval_headers,
    options_headers,
    success_status,
)
from tusserver.protocol import TusError
from tusserver.registry import UploadInfo


async def append(request: Request, patch: Append) -> Response:
    """2xx with Upload-Offset and the completeness field once the body is stored; 409 at the
    wrong offset; the version's answer for a completed upload (ietf.completed_upload)."""
    interop = patch.interop
    core = core_of(request)
    async with core.locked(upload_id_of(request), receiving=True) as (info, hold):
        if info.is_final:
            raise TusError(403, "the final upload of a tus concatenation cannot be appended to")
        if info.finished:
            refusal = completed_upload(
                interop,
                offset=info.offset,
                provided_offset=patch.offset,
                content_length=patch.content_length,
                complete=patch.complete,
            )
            if refusal is not None:
                raise refusal
            return _appended(interop, info)  # v9*: replay the completing response
        if patch.offset != info.offset:
            raise mismatching_offset(interop, info.offset, patch.offset)
        await _check_length(request, interop, info, patch)
        outcome = await receive_body(request, core, info, hold, interop)
        check_outcome(outcome, info)
        if patch.complete:
            await complete(core, info, interop)
    if info.is_partial and info.finished:  # a tus partial: its final may be complete now
        await partial_finished(core, info)
    response = _appended(interop, info)
    if info.finished:  # this request finished it: pre-finish may add to the response
        response = apply_response(response, await core.hooks.finished(request, info))
    return response


def _appended(interop: Interop, info: UploadInfo) -> Response:
    headers = append_response_headers(interop, offset=info.offset, complete=info.finished)
    return Response(status_code=success_status(interop, creation=False), headers=headers)


async def _check_length(
    request: Request, interop: Interop, info: UploadInfo, patch: Append
) -> None:
    """Record a length the request indicates (it must match one recorded before, -06 §4.1.3)
    and refuse up front a Content-Length that goes past the length or --max-size."""
    core = core_of(request)
    check_recorded_length(interop, info.length, patch.length)
    if patch.length is not None and info.length is None:
        await core.declare_length(info, patch.length)
    remaining = core.remaining(info)
    if patch.content_length is None or remaining is None or patch.content_length <= remaining:
        return
    where = {"Upload-Offset": str(info.offset)}
    oversize = TusError(413, "request body exceeds the server's maximum upload size", where)
    raise too_large(core, interop, info, oversize)  # or past the declared length: 400


async def retrieve_offset(request: Request, retrieval: OffsetRetrieval) -> Response:
    """204 with Upload-Offset, the completeness field, Upload-Length when known, Upload-Limit
    and Cache-Control: no-store (draft-01 §5 … -06 §4.3.2). Taking the lock first makes a stale
    request still writing save what it has and stop, so the offset is the real one."""
    interop = retrieval.interop
    core = core_of(request)
    async with core.locked(upload_id_of(request)) as (info, _):
        if info.is_final and not info.finished:
            info = await assemble_if_ready(core, info, request)
    headers = offset_retrieval_headers(
        interop,
        offset=info.offset,
        complete=info.finished,
        length=info.length,
        limit=limit_of(core, interop, info),
    )
    return Response(status_code=interop.head_status, headers=headers)


async def cancel(request: Request) -> Response:
    """204 ("MUST respond with a 204 (No Content)", -06 §4.5.2); an in-flight append is
    stopped first, later requests get 410. 405 with --disable-termination, as for tus."""
    core = core_of(request)
    if core.settings.disable_termination:
        raise TusError(405, "method DELETE not allowed", {"Allow": "HEAD, OPTIONS, PATCH"})
    granted = await terminate(core, upload_id_of(request), request)
    return apply_response(Response(status_code=204), granted)


async def options(request: Request, discovery: Options) -> Response:
    """The tus OPTIONS answer plus the draft's: Upload-Limit and, in -10/-11, Accept-Patch
    (-05 §8.2, -06 §4.1.4, -10 §4.1.4)."""
    response = await handle_options(request)
    core = core_of(request)
    extra = options_headers(discovery.interop, max_size=core.settings.max_size or None)
    response.headers.update(extra)
    return response
