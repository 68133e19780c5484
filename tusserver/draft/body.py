"""What creation and append share: 104 responses, the Upload-Limit of an upload, receiving a
body into the upload through the core, and completing the upload when the request says so."""

from __future__ import annotations

import time

from starlette.requests import Request

from tusserver.core import Hold, TusCore
from tusserver.ietf import (
    IetfError,
    Interop,
    inconsistent_length,
    length_exceeded,
    progress_interim_headers,
    upload_limit,
)
from tusserver.interim import send_interim
from tusserver.protocol import TusError
from tusserver.registry import UploadInfo
from tusserver.transfer import Outcome

UPLOAD_RESUMPTION_SUPPORTED = 104

INTERRUPTED = {
    "stopped": "upload interrupted by a newer request for the same upload",
    "timeout": "request body timed out; resume from Upload-Offset",
}


def interims_on(core: TusCore) -> bool:
    """--ietf-interim: on, off, or auto (off behind a proxy, which may take a 104 from its
    upstream for the final response: nginx does)."""
    mode = core.settings.ietf_interim
    return mode == "on" or (mode == "auto" and not core.settings.behind_proxy)


async def send_104(request: Request, core: TusCore, headers: dict[str, str]) -> None:
    """One 104 (Upload Resumption Supported), if allowed and the server can send it."""
    if interims_on(core):
        await send_interim(request, UPLOAD_RESUMPTION_SUPPORTED, headers)


def limit_of(core: TusCore, interop: Interop, info: UploadInfo | None = None) -> str | None:
    """The Upload-Limit of an upload (or of uploads in general): --max-size as `max-size`, the
    remaining lifetime of an unfinished upload as `max-age` (`expires` in interop 6)."""
    expires = info.expires if info is not None and not info.finished else None
    expires_in = None if expires is None else expires - time.time()
    return upload_limit(interop, max_size=core.settings.max_size or None, expires_in=expires_in)


async def receive_body(
    request: Request, core: TusCore, info: UploadInfo, hold: Hold, interop: Interop | None
) -> Outcome:
    """Stream the request body into the upload (lock held). Each offset the core records
    during the body (durable: synced first) goes out as a progress 104 in the versions that
    define them (-03 §4/§6 on); a post-receive hook's StopUpload ends it as for tus.

    Only an offset that advanced is reported: a checkpoint makes durable what the store has
    written, and a slow body may not have filled a write batch since the last one, so the
    same offset (at first the one the body started at) would come again and tell nothing."""
    reported = info.offset

    async def progress_104(offset: int) -> None:
        nonlocal reported
        if offset <= reported:
            return
        headers = progress_interim_headers(interop, offset) if interop is not None else None
        if headers is not None:
            reported = offset
            await send_104(request, core, headers)

    try:
        async with core.hooks.receiving(request, info) as progress:  # post-receive
            outcome = await core.receive(
                request.receive, info, hold, observers=(progress,), on_checkpoint=progress_104
            )
    except TusError as exc:
        if exc.status == 413 and interop is not None:  # the size guard stopped the body
            raise too_large(core, interop, info, exc) from None
        raise
    if progress.stopped is not None:  # a post-receive hook answered StopUpload
        await core.hooks.stop_upload(request, info, progress, core.terminate)
    return outcome


def too_large(
    core: TusCore, interop: Interop, info: UploadInfo, exc: TusError
) -> IetfError | TusError:
    """The draft's answer to a body too large for the upload (`exc`, the core's 413): past a
    length the upload declared it is an inconsistent length (400, -05 §6, -06 §4.4.2); past
    --max-size it stays 413, with the Upload-Limit that says why (v9* §4.1.4 SHOULD)."""
    if info.length is not None:
        return length_exceeded(interop, info.length).with_headers(exc.headers)
    limit = limit_of(core, interop, info)
    if limit is not None:
        exc.headers.setdefault("Upload-Limit", limit)
    return exc


def check_outcome(outcome: Outcome, info: UploadInfo) -> None:
    """A body that did not arrive whole: what came is kept and recorded, the upload stays
    incomplete ("If the server did not receive and apply the entire patch document, the upload
    MUST NOT be considered complete", -04 §6), and the answer says where to resume."""
    if outcome.interrupted == "shutdown":
        raise TusError(
            503,
            "server is shutting down; resume from Upload-Offset",
            {"Upload-Offset": str(info.offset), "Retry-After": "2", "Connection": "close"},
        )
    if outcome.interrupted is not None or not outcome.complete:
        # Also a client gone mid-body ("disconnected"): nobody reads this answer, but the
        # request must not go on to complete the upload with what arrived.
        reason = INTERRUPTED.get(outcome.interrupted or "", "request body ended early")
        raise TusError(400, reason, {"Upload-Offset": str(info.offset)})


async def complete(core: TusCore, info: UploadInfo, interop: Interop | None) -> None:
    """The request said its content ends the upload (Upload-Complete: ?1). With no length
    recorded yet, the length is what arrived ("the upload's final size is the Content-Length",
    -02 §4, which a chunked body tells only at its end); a recorded length not reached is
    inconsistent (-06 §4.1.3). Reaching the recorded length completes an upload by itself, as
    in tus (tusd does the same; P8), so there may be nothing left to do."""
    if info.finished:
        return
    if info.length is None:
        await core.declare_length(info, info.offset)
        await core.record_offset(info, info.offset)
        return
    detail = f"the request ends the upload at {info.offset} bytes, but its length is {info.length}"
    if interop is None:
        raise TusError(400, detail)
    raise inconsistent_length(interop, detail).with_headers({"Upload-Offset": str(info.offset)})
