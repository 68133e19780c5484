"""POST: create an upload (Creation, Creation With Upload, Creation Defer Length)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tusserver.checksum import chunk_check
from tusserver.concat import assemble_if_ready, final_length, load_partials, new_final
from tusserver.handlers.common import (
    core_of,
    expiry_headers,
    has_body,
    mount_root,
    optional_int,
    upload_url,
)
from tusserver.hooks import apply_response
from tusserver.protocol import (
    OFFSET_OCTET_STREAM,
    Concat,
    Metadata,
    TusError,
    is_offset_stream,
    parse_concat,
    parse_defer_length,
    parse_metadata,
)
from tusserver.registry import UploadInfo


def _length_from_headers(request: Request) -> int | None:
    """Exactly one of Upload-Length or `Upload-Defer-Length: 1` (Creation, "POST")."""
    length = optional_int(request, "Upload-Length")
    defer = request.headers.get("Upload-Defer-Length")
    if defer is not None:
        parse_defer_length(defer)
        if length is not None:
            raise TusError(400, "send either Upload-Length or Upload-Defer-Length, not both")
        return None
    if length is None:
        raise TusError(400, "Upload-Length or Upload-Defer-Length header required")
    return length


async def _refuse_foreign_body(request: Request) -> None:
    """Creation With Upload: "The Client MUST include the Content-Type:
    application/offset+octet-stream header." A body of any other type (or without one) would
    be dropped silently while the upload is created, so it gets 415 before anything is created
    or any hook runs. A bodyless POST is plain Creation and may carry any Content-Type."""
    if is_offset_stream(request.headers.get("content-type")):
        return
    if await has_body(request):
        raise TusError(415, f"a POST body must have Content-Type: {OFFSET_OCTET_STREAM}")


async def handle_post(request: Request) -> Response:
    """201 + Location; with a body (creation-with-upload) also Upload-Offset."""
    core = core_of(request)
    await _refuse_foreign_body(request)
    # Like tusd, Upload-Concat is ignored when the store cannot join uploads (the extension
    # is not advertised then): a final then lacks its Upload-Length (400).
    concat_header = request.headers.get("Upload-Concat") if core.store.can_concat else None
    concat = parse_concat(concat_header) if concat_header is not None else None
    metadata = parse_metadata(request.headers.get("Upload-Metadata", ""))
    if concat is not None and not concat.partial:
        return await _create_final(request, concat, metadata)
    length = _length_from_headers(request)
    info = UploadInfo(
        id=core.new_id(),
        length=length,
        metadata_raw=metadata.raw if metadata else None,
        metadata=metadata.text() if metadata else {},
        concat=concat.raw if concat else None,
        is_partial=concat is not None,
    )
    with_body = is_offset_stream(request.headers.get("content-type"))
    declared = optional_int(request, "Content-Length")
    remaining = core.remaining(info)
    if with_body and declared is not None and remaining is not None and declared > remaining:
        raise TusError(413, "request body exceeds the upload length")
    check = chunk_check(request.headers, request.scope) if with_body else None
    granted = await core.hooks.pre_create(request, info)  # may reject, or change ID/metadata
    await core.create(info)
    await core.hooks.post_create(request, info)
    headers = {"Location": upload_url(request, info.id)}
    if with_body:
        async with core.holding(info.id, receiving=True) as hold:
            try:
                async with core.hooks.receiving(request, info) as progress:  # post-receive
                    await core.receive(
                        request.receive,
                        info,
                        hold,
                        observers=(*(check.observers if check else ()), progress),
                        checkpoints=check is None,
                        verify=check.verify if check else None,
                    )
            except TusError as exc:  # e.g. 460: the upload exists, the client may resume it
                exc.headers.setdefault("Location", headers["Location"])
                raise
            if progress.stopped is not None:  # a post-receive hook answered StopUpload
                await core.hooks.stop_upload(request, info, progress, core.terminate)
        headers["Upload-Offset"] = str(info.offset)
    headers.update(expiry_headers(info))
    response = apply_response(Response(status_code=201, headers=headers), granted)
    if info.finished:  # empty upload, or all bytes came with the POST: pre-/post-finish
        response = apply_response(response, await core.hooks.finished(request, info))
    return response


async def _create_final(request: Request, concat: Concat, metadata: Metadata | None) -> Response:
    """Concatenation: a final upload from partial URLs; assembled now if they are complete.

    "The Client MUST NOT include the Upload-Length header in the final upload creation" and
    its metadata is its own ("the partial uploads' metadata SHALL NOT be transferred").
    """
    core = core_of(request)
    if request.headers.get("Upload-Length") is not None:
        raise TusError(400, "a final upload takes no Upload-Length: it is the sum of its partials")
    if (
        is_offset_stream(request.headers.get("content-type"))
        and optional_int(request, "Content-Length") != 0
    ):
        raise TusError(400, "a final upload takes no body")
    collection = mount_root(request) + core.settings.base_path
    partials = await load_partials(core, concat, collection)
    info = UploadInfo(
        id=core.new_id(),
        length=None,
        metadata_raw=metadata.raw if metadata else None,
        metadata=metadata.text() if metadata else {},
        concat=concat.raw,
    )
    info.is_final, info.partials = True, [p.id for p in partials]  # for the pre-create payload
    info.length = final_length(partials)
    granted = await core.hooks.pre_create(request, info)
    await new_final(core, info, partials)
    await core.hooks.post_create(request, info)
    async with core.holding(info.id):
        info = await assemble_if_ready(core, info, announce=False)  # finished() below
    headers = {"Location": upload_url(request, info.id), **expiry_headers(info)}
    response = apply_response(Response(status_code=201, headers=headers), granted)
    if info.finished:
        response = apply_response(response, await core.hooks.finished(request, info))
    return response
