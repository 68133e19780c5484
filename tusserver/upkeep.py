"""Periodic upkeep of one worker process: expire abandoned uploads, retry removals that
failed, finish again uploads whose finish was lost, and abort the store's orphans.

Every process of every instance runs it, so each step is idempotent: an upload is handled
under its lock (skipped while someone holds it), and the registry's compare-and-sets pick one
winner (an upload expires once; post-finish is recorded once).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import anyio

from tusserver.errors import BackendUnavailable
from tusserver.protocol import TusError, is_valid_upload_id
from tusserver.registry import ACTIVE, COMPLETE, GONE_STATES

if TYPE_CHECKING:
    from tusserver.core import TusCore

log = logging.getLogger("tusserver")

REPAIR_INTERVAL = 30.0
# Store-side uploads (S3 multipart uploads) this old with no active upload behind them are
# aborted when expiry is off (else: older than --expiration).
STRAY_AGE = 86400.0


async def retry_removals(core: TusCore) -> int:
    """Remove the data of gone uploads whose removal failed before; the number removed.

    Each is checked again under its lock: after its tombstone was pruned the id may
    name a new upload (a hook-chosen id), whose data must stay."""
    removed = 0
    for upload_id in list(core.unremoved):
        try:
            async with core.locker.hold(upload_id, timeout=0):
                info = await core.registry.get(upload_id)
                if info is not None and info.state not in GONE_STATES:
                    core.unremoved.discard(upload_id)  # a new upload of that id
                    continue
                await anyio.to_thread.run_sync(core.store.remove, upload_id)
        except TusError:
            continue  # locked right now: next round
        except BackendUnavailable as exc:
            log.warning("upload %s: removing its data failed again: %s", upload_id, exc)
            continue
        core.unremoved.discard(upload_id)
        await core.forget_lock(upload_id)
        log.info("upload %s: its data was removed on a later attempt", upload_id)
        removed += 1
    return removed


async def cleanup_once(core: TusCore) -> int:
    """Remove every expired upload that nobody is writing right now (and the data of
    gone uploads whose removal failed before)."""
    await retry_removals(core)
    now = time.time()
    removed = 0
    for upload_id in await core.registry.expired_ids(now):
        info = await core.registry.get(upload_id)
        if info is None or not info.expired_at(now):
            continue
        try:
            async with core.locker.hold(upload_id, timeout=0):
                removed += await core.expire(info)
        except TusError:
            continue  # someone is uploading to it right now; not abandoned after all
    await core.registry.prune_tombstones(now)
    return removed


async def cleanup_forever(core: TusCore) -> None:
    """Background task: expire abandoned uploads every cleanup interval (every instance
    sweeps; expire() lets exactly one of them remove each upload)."""
    interval = core.settings.cleanup_interval
    if core.settings.expiration <= 0 or interval <= 0:
        return
    while True:
        await anyio.sleep(interval)
        try:
            await cleanup_once(core)
        except BackendUnavailable as exc:
            log.warning("expiry cleanup skipped: %s", exc)
        except Exception:
            log.exception("expiry cleanup failed")


async def repair_finishes(core: TusCore, older_than: float | None = None) -> int:
    """Finish again every complete upload whose finish is still pending: the last byte
    was recorded, but its post-finish deliveries were not (the registry failed, or the
    process died, in between). Returns how many were finished here.

    `older_than` (default: Hooks.finish_grace) leaves alone uploads that may still be
    finishing in their own request. Idempotent across processes and instances: each
    upload is finished under its lock (skipped while someone holds it), and
    Hooks.finished records post-finish only once per upload. Without the original
    request the hooks get an empty HTTPRequest, as for any background event; pre-finish
    runs too (at least once, like every hook), its answer reaches no one.
    """
    age = core.hooks.finish_grace() if older_than is None else older_than
    finished = 0
    for upload_id in await core.registry.pending_finishes(age):
        try:
            async with core.locker.hold(upload_id, timeout=0):
                info = await core.registry.get(upload_id)
                if info is None or info.state != COMPLETE:
                    continue
                log.warning("upload %s: recording its finish again", upload_id)
                await core.finish_store(info)
                await core.hooks.finished(None, info)
                finished += 1
        except TusError as exc:
            if exc.status != 423:  # 423: in use right now, next round
                log.error("upload %s: finish hooks failed: %s", upload_id, exc.message)
        except BackendUnavailable:
            raise  # the whole round waits for the backend
        except Exception as exc:  # this upload's finish (e.g. its data is gone); the others go on
            log.error("upload %s: finishing it failed (retried later): %r", upload_id, exc)
    return finished


async def sweep_strays(core: TusCore) -> int:
    """Abort store-side uploads that no upload needs any more (S3: open multipart uploads
    under the prefix, older than the expiry, left by a crash, a stale writer or a client of
    the bucket that is not this server): they cost money and are never listed otherwise.

    An active upload's are left to it (its next writer, finish or removal handles them), as
    is the one multipart upload a complete upload still has to assemble."""
    age = core.settings.expiration if core.settings.expiration > 0 else STRAY_AGE
    aborted = 0
    for upload_id, ref in await anyio.to_thread.run_sync(core.store.strays, age):
        info = await core.registry.get(upload_id) if is_valid_upload_id(upload_id) else None
        if info is not None and (info.state == ACTIVE or info.store_ref == ref):
            continue
        await anyio.to_thread.run_sync(core.store.abort, upload_id, ref)
        log.info("aborted an orphaned store upload of %s (%s)", upload_id, ref)
        aborted += 1
    return aborted


async def repair_forever(core: TusCore) -> None:
    """Background task: every REPAIR_INTERVAL, retry failed removals, finish uploads whose
    finish was lost and abort orphaned store uploads (every instance runs it; see
    repair_finishes and sweep_strays)."""
    unreachable = False  # an outage is logged once, not every round
    while True:
        await anyio.sleep(REPAIR_INTERVAL)
        try:
            await retry_removals(core)
            await repair_finishes(core)
            await sweep_strays(core)
            unreachable = False
        except BackendUnavailable as exc:
            if not unreachable:
                log.warning("finish repair paused: %s", exc)
            unreachable = True
        except Exception:
            log.exception("finish repair failed")
