"""Concatenation and concatenation-unfinished: partial uploads joined into a final upload.

A final upload is a registry row (is_final, partials = ids in order) whose bytes are filled
by `Store.concat` (a file store: kernel-side copy, nothing read into memory) once every
partial is complete. Only stores that can (`Store.can_concat`) get here: otherwise the
extension is not advertised and POST ignores Upload-Concat.
Its offset stays 0 until then and jumps to its length when assembled, so `finished` means
"assembled". Assembly runs under the final's lock and re-reads every row first, so when
several workers finish partials at the same time exactly one of them assembles, and the one
that records the last partial always sees all of them complete. If a process dies mid-way,
the next HEAD of the final (or the next partial to finish) assembles it again from scratch.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import anyio
from starlette.requests import Request

from tusserver.core import TusCore
from tusserver.errors import BackendUnavailable
from tusserver.protocol import Concat, TusError, is_valid_upload_id
from tusserver.registry import ACTIVE, GONE_STATES, UploadInfo

log = logging.getLogger("tusserver")


def partial_id_from_url(url: str, collection_path: str) -> str:
    """The upload id in an absolute or relative partial URL of this server (400 otherwise).

    Only the path counts (ids are random 128-bit tokens): it must be the creation URL's path
    followed by a valid id, so no URL can name a file outside the upload directory.
    """
    path = urlsplit(url).path
    if not path.startswith(collection_path):
        raise TusError(400, f"Upload-Concat: {url} is not an upload URL of this server")
    upload_id = path[len(collection_path) :]
    if not is_valid_upload_id(upload_id):
        raise TusError(400, f"Upload-Concat: {url} is not an upload URL of this server")
    return upload_id


async def load_partials(core: TusCore, concat: Concat, collection_path: str) -> list[UploadInfo]:
    """The partial uploads a final names, in order: 404 unknown, 410 gone, 400 not partial."""
    partials = []
    for url in concat.urls:
        info = await core.load(partial_id_from_url(url, collection_path))
        if not info.is_partial:
            raise TusError(400, f"Upload-Concat: {url} is not a partial upload")
        partials.append(info)
    return partials


def final_length(partials: list[UploadInfo]) -> int | None:
    """ "The length of the final upload MUST be the sum of the length of all partial uploads";
    unknown while any partial still defers its length."""
    if any(p.length is None for p in partials):
        return None
    return sum(p.length or 0 for p in partials)


async def new_final(core: TusCore, final: UploadInfo, partials: list[UploadInfo]) -> UploadInfo:
    """Record a final upload (assembled later by `assemble_if_ready`)."""
    final.is_final = True
    final.partials = [p.id for p in partials]
    final.length = final_length(partials)
    return await core.create(final)  # a known length is checked there like any other


async def current_length(core: TusCore, final: UploadInfo) -> int | None:
    """The final's length for HEAD: known once every partial's length is known."""
    if final.length is not None:
        return final.length
    partials = [await core.registry.get(pid) for pid in final.partials]
    if any(p is None for p in partials):
        return None
    return final_length([p for p in partials if p is not None])


async def assemble_if_ready(
    core: TusCore, final: UploadInfo, request: Request | None = None, *, announce: bool = True
) -> UploadInfo:
    """Assemble `final` if all its partials are complete. The caller holds the final's lock.

    Returns the (possibly updated) info; leaves it untouched while partials are unfinished.
    With `announce` the finish hooks run here; a caller that wants the pre-finish answer for
    its own response (final creation) passes False and calls them itself.
    """
    if not final.is_final or final.state != ACTIVE or final.finished:
        return final
    partials = [await core.registry.get(pid) for pid in final.partials]
    ready = [p for p in partials if p is not None and p.state not in GONE_STATES and p.finished]
    if len(ready) != len(partials):
        return final
    length = sum(p.length or 0 for p in ready)
    try:
        await anyio.to_thread.run_sync(core.store.concat, final, ready)
    except (OSError, BackendUnavailable) as exc:  # StoreFull, a partial's data gone, EIO
        log.error("assembling final upload %s failed (retried later): %s", final.id, exc)
        return final
    if final.length is None:
        await core.registry.set_length(final.id, length)
        final.length = length
    # Completing goes through the core like any upload's last byte (state, expiry, metrics).
    await core.record_offset(final, length)
    log.info("final upload %s assembled from %d partial uploads", final.id, len(ready))
    if announce:
        await announce_finished(core, final, request)
    return final


async def announce_finished(core: TusCore, final: UploadInfo, request: Request | None) -> None:
    """Hooks (pre-/post-finish, and so post-processing) learn of an assembled final as of any
    upload whose last byte arrived. `request` is the client request that completed it, None
    when it completed as a side effect of another upload. A pre-finish answer cannot be sent
    to anyone here, and its failure must not undo the assembly, so both are only logged."""
    try:
        await core.hooks.finished(request, final)
    except TusError as exc:
        log.error("finish hooks for final upload %s failed: %s", final.id, exc.message)


async def partial_finished(core: TusCore, partial: UploadInfo) -> None:
    """A partial just completed: assemble every final that was only waiting for it.

    Called after the partial's own lock is released. A final another request holds (e.g. a
    worker assembling it) is skipped: that holder or the next HEAD completes it.
    """
    if not partial.is_partial or not partial.finished:
        return
    for final_id in await core.registry.finals_waiting_for(partial.id):
        try:
            async with core.locked(final_id) as (final, _):
                if partial.id in final.partials:
                    await assemble_if_ready(core, final)
                    if not final.finished:  # still waiting: its expiry slides on
                        await core.record_offset(final, final.offset)
        except TusError:
            continue
