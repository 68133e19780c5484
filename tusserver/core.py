"""The server core shared by every handler: settings, the backends (store, registry, locker,
liveness) and the upload operations (create, receive bytes, terminate, expire) that need more
than one of them.

Handlers stay thin: they parse headers with `protocol`, call one operation here and turn the
result into headers. Everything here is independent of Starlette except the ASGI `receive`,
and of the backends' implementations: `tusserver.backends.build` picks them from the settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Protocol

import anyio

from tusserver import metrics, upkeep
from tusserver.backends import Backends, build
from tusserver.config import Settings
from tusserver.errors import AlreadyExists, BackendUnavailable, StoreFull
from tusserver.hooks import Hooks
from tusserver.logs import upload_event
from tusserver.protocol import TusError, check_upload_length
from tusserver.registry import ACTIVE, COMPLETE, EXPIRED, GONE_STATES, TERMINATED, UploadInfo
from tusserver.storage import Store, Writer
from tusserver.storage.base import NO_PROGRESS, Progress, Reserve
from tusserver.transfer import Observer, Outcome, Receive, Sink, pump

log = logging.getLogger("tusserver")

VerifyHook = Callable[[Outcome], None]
CheckpointHook = Callable[[int], Awaitable[None]]

# Seconds between rounds of the finish repair (and of retried removals): see repair_finishes.
# Backoff of the background start retry after a failed start (first delay, longest delay).
START_RETRY_FIRST = 0.5
START_RETRY_MAX = 30.0

# How long a store's writer thread waits for a part number from the registry.
RESERVE_TIMEOUT = 30.0

# Every core of this process, so a server shutdown can reach them (see begin_shutdown_all).
_LIVE_CORES: weakref.WeakSet[TusCore] = weakref.WeakSet()


def begin_shutdown_all() -> None:
    """Graceful shutdown started (SIGTERM): every in-flight body saves what it has and ends."""
    for core in list(_LIVE_CORES):
        core.begin_shutdown()


def unavailable(exc: BackendUnavailable, headers: dict[str, str] | None = None) -> TusError:
    """The answer to a backend that cannot be reached: 503 with Retry-After (tus clients retry
    5xx answers and resume from the recorded offset). The backend's own message (hosts,
    driver errors) is for the log, not for clients."""
    log.error("backend unavailable: %s", exc)
    return TusError(
        503,
        "storage or registry unavailable; retry later",
        {"Retry-After": str(exc.retry_after), **(headers or {})},
    )


class OffsetChanged(TusError):
    """The registry's offset moved under a writer: another request took the upload over (a
    lost lock). Nothing of this request is recorded; the client asks HEAD and resumes."""


class Service(Protocol):
    """A background service of one worker process (see TusCore.services)."""

    def start(self) -> None: ...

    async def stop(self) -> None: ...


class Hold:
    """One request's hold on an upload's lock (see TusCore.locked).

    The locker calls `release_requested` in the event loop when another request asks for the
    upload; a body being received then stops, is saved and the lock is let go. A request
    asked before its body started stops as soon as it starts.
    """

    __slots__ = ("asked", "on_ask")

    def __init__(self) -> None:
        self.asked = False
        self.on_ask: Callable[[], None] | None = None

    def release_requested(self) -> None:
        self.asked = True
        if self.on_ask is not None:
            self.on_ask()


class TusCore:
    """Owns the shared state of one server (one per worker process)."""

    def __init__(self, settings: Settings, backends: Backends | None = None):
        self.settings = settings
        self.backends = backends or build(settings)
        self.store: Store = self.backends.store
        self.registry = self.backends.registry
        self.locker = self.backends.locker
        self.liveness = self.backends.liveness
        self.started = False
        self.stopped = False  # stop_background ran: never start again
        self._start_task: asyncio.Task[None] | None = None  # the start attempt in progress
        self._start_retry: asyncio.Task[None] | None = None
        self._background: list[asyncio.Task[None]] = []
        # gone uploads whose data could not be removed yet (retried by the sweeps)
        self.unremoved: set[str] = set()
        # tusd-compatible hooks; inert (every `wants()` False) when nothing is configured
        self.hooks = Hooks(settings, self.registry, self.store, self.liveness)
        # other per-process background services started and stopped with the core (e.g. the
        # processing job runner); each has start() (needs a running loop) and async stop()
        self.services: list[Service] = []
        # Set on graceful shutdown: in-flight receives stop, save and answer 503.
        self.shutting_down = asyncio.Event()
        self._stoppers: set[Callable[[], None]] = set()  # one per in-flight receive
        self.active_receives = 0
        _LIVE_CORES.add(self)

    def begin_shutdown(self) -> None:
        """Tell in-flight receives to stop, save what they have and let the server exit."""
        if not self.shutting_down.is_set():
            log.info("shutdown: stopping %d in-flight upload(s)", self.active_receives)
            self.shutting_down.set()
        for stop in list(self._stoppers):
            stop()

    # -- lookups ---------------------------------------------------------------------------

    async def load(self, upload_id: str) -> UploadInfo:
        """The upload's info; 404 if unknown, 410 if terminated or expired.

        For callers without the upload's lock (GET, /status): an upload past its expiry is
        answered 410 but not removed here (a writer may hold it); the expiry sweep, which
        takes the lock, removes it. Under the lock, locked() removes it at once.
        """
        return await self._load(upload_id, holding_lock=False)

    async def _load(self, upload_id: str, *, holding_lock: bool) -> UploadInfo:
        info = await self.registry.get(upload_id)
        if info is None:
            raise TusError(404, "upload not found")
        if info.state in GONE_STATES:
            raise TusError(410, f"upload {info.state}")
        if info.expired_at(time.time()):
            if holding_lock:
                await self.expire(info)
            raise TusError(410, "upload expired")
        return info

    @contextlib.asynccontextmanager
    async def locked(
        self, upload_id: str, *, receiving: bool = False
    ) -> AsyncIterator[tuple[UploadInfo, Hold]]:
        """Hold the upload's lock and yield its fresh info (stale holders are asked to let go).

        The info is read once, under the lock (one registry read per request, not two). For
        an unknown or removed upload the locker forgets it again, so unknown ids leave nothing
        behind (no lock files). `receiving`: this request will receive a body, which release
        requests stop (others hold the lock briefly: the locker need not watch for them).
        """
        async with self.holding(upload_id, receiving=receiving) as hold:
            try:
                info = await self._load(upload_id, holding_lock=True)
            except TusError:
                await self.locker.forget(upload_id)
                raise
            yield info, hold

    @contextlib.asynccontextmanager
    async def holding(self, upload_id: str, *, receiving: bool = False) -> AsyncIterator[Hold]:
        """Hold the upload's lock (for an upload this request just created, whose info is at
        hand; locked() also reads it); see locked() for `receiving`."""
        hold = Hold()
        callback = hold.release_requested if receiving else None
        async with self.locker.hold(upload_id, self.settings.lock_timeout, callback):
            yield hold

    def expires_for_new_activity(self) -> float | None:
        """Expiry is sliding: every accepted chunk pushes it out again."""
        return time.time() + self.settings.expiration if self.settings.expiration > 0 else None

    # -- creation --------------------------------------------------------------------------

    def new_id(self) -> str:
        """Random, URL-safe, 128-bit id (hex, like tusd's)."""
        return secrets.token_hex(16)

    async def create(self, info: UploadInfo, *, protocol: str = "tus") -> UploadInfo:
        """Persist a new upload: its (empty) bytes first, on a worker thread, then the
        registry row.

        Creating a file waits for the file system journal, which the fdatasync of concurrent
        PATCHes keeps busy: on the event loop that stalled every request of the server (~30%
        of the loop's time with 32 concurrent small uploads).
        """
        self._prepare_create(info)
        future = asyncio.get_running_loop().run_in_executor(None, self._make_files, info.id)
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:  # the file may appear after all: remove it then

            def remove_made(done: asyncio.Future[None]) -> None:
                if not done.cancelled() and done.exception() is None:
                    self._remove_quietly(info.id)

            if self.store.creates_data:
                future.add_done_callback(remove_made)
            raise
        return await self._register(info, protocol)

    def _make_files(self, upload_id: str) -> None:
        """The new upload's bytes, and whatever the locker prepares for it (the local locker
        links its lock file to the data file: no inode to allocate when PATCH locks)."""
        self.store.create(upload_id)
        self.locker.created(upload_id, self.store.local_path(upload_id))

    def _prepare_create(self, info: UploadInfo) -> None:
        """Checks and initial state of a new upload (before its data exists)."""
        if info.length is not None:
            self.check_length(info.length)
        self.check_space(info.length)
        if info.finished:  # a zero-length upload is complete the moment it exists
            info.state, info.expires = COMPLETE, None
        else:
            info.expires = self.expires_for_new_activity()

    async def _register(self, info: UploadInfo, protocol: str) -> UploadInfo:
        """The registry row of a new upload whose bytes exist (removed with what the locker
        made if this fails; inline, since a cancelled request cannot wait for a thread).

        A store whose `create` makes nothing (S3) leaves a taken id to the registry: the
        data and the lock under that id are then the other upload's, and stay."""
        try:
            await self.registry.create(info)
        except BaseException as exc:
            if self.store.creates_data:
                self._remove_quietly(info.id)
            if self.store.creates_data or not isinstance(exc, AlreadyExists):
                with contextlib.suppress(Exception):
                    await self.locker.forget(info.id)
            raise
        metrics.UPLOADS_CREATED.labels(protocol).inc()
        upload_event("created", info.id, length=info.length)
        if info.finished:
            await self._finished(info)
        return info

    def _remove_quietly(self, upload_id: str) -> None:
        """Remove the bytes of an upload that never got its registry row (inline: the caller
        is failing already, its own error says more than a failed removal)."""
        try:
            self.store.remove(upload_id)
        except Exception as exc:
            log.error("upload %s was not created; removing its data failed: %s", upload_id, exc)

    # -- receiving bytes -------------------------------------------------------------------

    def remaining(self, info: UploadInfo) -> int | None:
        """How many more bytes this upload may take (length, or max size when deferred)."""
        if info.length is not None:
            return info.length - info.offset
        if self.settings.max_size:
            return self.settings.max_size - info.offset
        return None

    async def declare_length(self, info: UploadInfo, length: int) -> None:
        """creation-defer-length: the length arrives with a later PATCH, then is immutable."""
        if info.length is not None:
            if info.length != length:
                raise TusError(400, "Upload-Length cannot be changed once set")
            return
        if length < info.offset:
            raise TusError(400, "Upload-Length is smaller than the current offset")
        self.check_length(length)
        if not await self.registry.set_length(info.id, length):
            current = await self.registry.get(info.id)
            if current is None or current.state != ACTIVE:  # removed under a lost lock
                raise TusError(410, f"upload {current.state if current else 'removed'}")
            raise TusError(400, "Upload-Length cannot be changed once set")
        info.length = length

    async def receive(
        self,
        receive: Receive,
        info: UploadInfo,
        hold: Hold,
        *,
        observers: Sequence[Observer] = (),
        checkpoints: bool = True,
        verify: VerifyHook | None = None,
        on_checkpoint: CheckpointHook | None = None,
    ) -> Outcome:
        """Stream a request body into the upload at its current offset; record the new offset.

        A release request (through `hold`) or the server's shutdown stops the body pump and
        what was received is kept. `verify` may reject the chunk after the fact (e.g. a
        checksum mismatch): the bytes are then discarded and the offset left unchanged. With
        `checkpoints` the offset is also recorded once per second during long bodies, and
        `on_checkpoint` is told each offset so recorded (durable: synced before it was
        recorded), e.g. for the IETF draft's progress 104 responses.
        """
        try:
            self.check_capacity()
            return await self._count_receive(
                receive,
                info,
                hold,
                observers=observers,
                checkpoints=checkpoints,
                verify=verify,
                on_checkpoint=on_checkpoint,
            )
        except TusError as exc:  # 460, 413, 503, 507: where to resume, so no HEAD is needed
            if exc.status not in (404, 410):
                exc.headers.setdefault("Upload-Offset", str(info.offset))
            raise
        except BackendUnavailable as exc:  # the recorded offset stands: resume from there
            raise unavailable(exc, {"Upload-Offset": str(info.offset)}) from exc
        except StoreFull:  # what reached the store is recorded (see _receive), or nothing was
            raise TusError(
                507, "not enough storage space; resume later", {"Upload-Offset": str(info.offset)}
            ) from None

    async def _count_receive(
        self,
        receive: Receive,
        info: UploadInfo,
        hold: Hold,
        *,
        observers: Sequence[Observer],
        checkpoints: bool,
        verify: VerifyHook | None,
        on_checkpoint: CheckpointHook | None,
    ) -> Outcome:
        """receive() once admitted: the body pump, counted in the active-upload gauge."""
        start = info.offset
        parts = await self.registry.parts(info.id) if self.store.keeps_parts else ()
        if sum(part.size for part in parts) > start:  # a stale writer recorded in between
            raise await self._offset_changed(info)
        try:
            writer = self.store.writer(info, parts, self._reserver(info.id))
        except FileNotFoundError:
            raise await self._data_missing(info) from None
        sink = Sink(writer, self.remaining(info), observers, concurrent=self.active_receives + 1)
        self.active_receives += 1
        metrics.ACTIVE_UPLOADS.inc()
        try:
            return await self._receive(
                receive,
                info,
                hold,
                writer,
                sink,
                Outcome(),
                checkpoints=checkpoints,
                verify=verify,
                on_checkpoint=on_checkpoint,
            )
        except FileNotFoundError:  # a remote store finds a removed upload when it first writes
            raise await self._data_missing(info) from None
        finally:
            self.active_receives -= 1
            metrics.ACTIVE_UPLOADS.dec()
            metrics.BYTES_RECEIVED.inc(max(0, info.offset - start))

    def _reserver(self, upload_id: str) -> Reserve | None:
        """Part numbers for a store that keeps parts: a blocking call for the writer's
        threads into the registry, which lives on this event loop."""
        if not self.store.keeps_parts:
            return None
        loop = asyncio.get_running_loop()
        registry = self.registry

        def reserve() -> int:
            try:
                asked = asyncio.run_coroutine_threadsafe(registry.reserve_part(upload_id), loop)
                return asked.result(RESERVE_TIMEOUT)
            except (TimeoutError, RuntimeError) as exc:  # RuntimeError: the loop is gone
                raise BackendUnavailable(f"no part number for upload {upload_id}: {exc}") from None

        return reserve

    def check_capacity(self) -> None:
        """503 past --max-concurrent-uploads or during shutdown; 507 below --min-free-space."""
        limit = self.settings.max_concurrent_uploads
        if limit and self.active_receives >= limit:
            raise TusError(503, "too many concurrent uploads; retry later", {"Retry-After": "1"})
        if self.shutting_down.is_set():
            raise TusError(503, "server is shutting down; retry later", {"Retry-After": "2"})
        self.check_space()

    def check_length(self, length: int) -> None:
        """413 for a length over --max-size (Creation: "the Server MUST respond with the 413
        Request Entity Too Large status") or over what the store can ever hold (e.g. more
        than the whole disk): not 507, since freeing space cannot help and a client would
        only retry in vain."""
        check_upload_length(length, self.settings.max_size)
        limit = self.store.max_object_size()
        if limit is not None and length > limit:
            raise TusError(
                413,
                f"upload length of {length} bytes can never fit: "
                f"the server's storage holds at most {limit} bytes",
            )

    def check_space(self, length: int | None = None) -> None:
        """507 unless `length` more bytes fit above the --min-free-space reserve (a store
        without a free-space figure never refuses)."""
        needed = self.settings.min_free_space + (length or 0)
        if not needed:
            return
        free = self.store.free_space()
        if free is not None and free < needed:
            raise TusError(507, "not enough storage space on the server; retry later")

    async def _receive(
        self,
        receive: Receive,
        info: UploadInfo,
        hold: Hold,
        writer: Writer,
        sink: Sink,
        outcome: Outcome,
        *,
        checkpoints: bool,
        verify: VerifyHook | None,
        on_checkpoint: CheckpointHook | None,
    ) -> Outcome:
        """receive() once the writer is open (see there)."""
        start = acked = info.offset

        async def checkpoint(written: int) -> None:
            nonlocal acked
            # Only bytes written before the sync started are surely durable: a write of the
            # pump may run beside it.
            durable = await anyio.to_thread.run_sync(writer.checkpoint, start + written)
            await self._record(info, writer, durable)
            acked = durable
            if on_checkpoint is not None:
                await on_checkpoint(durable)

        try:
            await self._watched(
                hold,
                outcome,
                pump(
                    receive,
                    sink,
                    outcome,
                    network_timeout=self.settings.network_timeout,
                    checkpoint=checkpoint if checkpoints else None,
                    checkpoint_interval=1.0,
                ),
            )
            if verify is not None:
                verify(outcome)
            durable = await anyio.to_thread.run_sync(writer.sync)
        except OffsetChanged:  # the upload is someone else's now: touch nothing
            writer.close()
            raise
        except TusError:
            try:
                await anyio.to_thread.run_sync(writer.discard_after, acked)
            finally:
                writer.close()
            await self.record_offset(info, acked)
            raise
        except StoreFull:  # a write or an fdatasync (ENOSPC, a quota); receive() answers 507
            await self._keep_after_full_disk(info, writer, acked)
            raise
        except BackendUnavailable:  # the store failed mid-body: keep what it holds (S3 parts)
            with contextlib.suppress(Exception):
                durable = await anyio.to_thread.run_sync(writer.checkpoint, start + sink.written)
                await self._record(info, writer, durable)
            writer.close()
            raise
        except BaseException:
            writer.close()
            raise
        try:
            await self._record(info, writer, durable)
        finally:
            writer.close()
        if durable < start + sink.written:  # the store kept less than it was given
            raise writer.failure or BackendUnavailable("the store kept only part of the body")
        return outcome

    async def _record(self, info: UploadInfo, writer: Writer, durable: int) -> None:
        """Record a durable offset with the store's progress behind it, then let the
        writer drop what that superseded."""
        await self.record_offset(info, durable, writer.progress(durable))
        writer.committed(durable)

    async def _keep_after_full_disk(self, info: UploadInfo, writer: Writer, acked: int) -> None:
        """ENOSPC: record the bytes that reached the store; if the registry cannot commit
        either (it often shares the disk), the offset recorded before stands."""
        kept = await anyio.to_thread.run_sync(
            _keep_what_reached_disk, writer, self.store, info.id, acked
        )
        try:
            await self.record_offset(info, kept, writer.progress(kept))
        except (BackendUnavailable, StoreFull):
            # discards everything past it (else the next writer does)
            with contextlib.suppress(OSError, BackendUnavailable):
                self.store.writer(replace(info, offset=acked)).close()
            info.offset = acked

    async def _data_missing(self, info: UploadInfo) -> TusError:
        """The upload's bytes are gone although it was loaded: removed meanwhile (404/410, as
        if it had been gone at the start), or lost (410: it cannot be continued, and an
        upload of zeros must never be made up in its place)."""
        current = await self.registry.get(info.id)
        if current is None:
            return TusError(404, "upload not found")
        if current.state in GONE_STATES:
            return TusError(410, f"upload {current.state}")
        if current.offset != info.offset:  # moved by a stale writer: its data is elsewhere
            return await self._offset_changed(info)
        log.error("upload %s: its data is missing from the store (offset %d)", info.id, info.offset)
        return TusError(410, "upload data is missing; start a new upload")

    async def _watched(self, hold: Hold, outcome: Outcome, work: Awaitable[None]) -> None:
        """Run `work`, cancelling it if another request asks for the upload (outcome:
        stopped; the locker's release request arrives through `hold`) or the server shuts
        down (outcome: shutdown, via a callback in `_stoppers`). Errors of `work` propagate.

        Callbacks and a cancel scope, not a watcher task: this runs for every PATCH, and a
        task per request (start, cancel) measured as a tenth of the small-upload CPU time.
        """
        scope = anyio.CancelScope()

        def stop(reason: str) -> None:
            if outcome.interrupted is None:
                outcome.interrupted = reason
            scope.cancel()

        def on_release() -> None:
            stop("stopped")

        def on_shutdown() -> None:
            stop("shutdown")

        hold.on_ask = on_release
        if hold.asked:  # asked while this request was still getting ready
            on_release()
        self._stoppers.add(on_shutdown)
        try:
            with scope:
                await work
        finally:
            self._stoppers.discard(on_shutdown)
            hold.on_ask = None

    async def record_offset(
        self, info: UploadInfo, offset: int, progress: Progress = NO_PROGRESS
    ) -> None:
        """Publish a durable offset (a compare-and-set from the offset last recorded, while
        the upload is active), with the store's `progress` behind it (parts, handle);
        completes the upload when the last byte arrived. OffsetChanged
        if another request moved the offset meanwhile, or removed the upload (410): this one
        lost the upload's lock. The caller holds the upload's lock.

        A complete upload has nothing left to record (its offset is its length)."""
        if info.state == COMPLETE:
            return
        finished = info.length is not None and offset == info.length
        expires = None if finished else self.expires_for_new_activity()
        state = COMPLETE if finished else ACTIVE
        if not await self.registry.set_offset(
            info.id,
            expected=info.offset,
            offset=offset,
            expires=expires,
            state=state,
            parts=progress.parts,
            store_ref=progress.ref,
        ):
            raise await self._offset_changed(info)
        completes = finished and info.state != COMPLETE
        info.offset, info.expires, info.state = offset, expires, state
        if progress.ref is not None:
            info.store_ref = progress.ref
        if completes:
            await self._finished(info)

    async def _offset_changed(self, info: UploadInfo) -> OffsetChanged:
        """409 with the offset recorded now, or 410 if the upload was removed meanwhile (one
        more read, only on this rare path)."""
        current = await self.registry.get(info.id)
        if current is None or current.state in GONE_STATES:
            log.warning("upload %s: removed while a request wrote to it; it stops", info.id)
            return OffsetChanged(410, f"upload {current.state if current else 'removed'}")
        offset = current.offset
        log.warning("upload %s: offset moved by another request; this one stops", info.id)
        return OffsetChanged(
            409,
            "upload offset changed by another request; resume from Upload-Offset",
            {"Upload-Offset": str(offset)},
        )

    async def _finished(self, info: UploadInfo) -> None:
        """The last byte is recorded: count it, and let the store assemble the upload."""
        metrics.upload_finished(info.created)
        upload_event("finished", info.id, offset=info.offset)
        await self.finish_store(info)

    async def finish_store(self, info: UploadInfo) -> None:
        """Let the store assemble a complete upload from its recorded parts, then forget the
        parts. Idempotent; if it fails (the store is unreachable) the upload's finish stays
        pending and upkeep.repair_finishes calls this again."""
        if not self.store.needs_finish:  # a thread hop only when finishing does work
            return
        parts = await self.registry.parts(info.id) if self.store.keeps_parts else []
        await anyio.to_thread.run_sync(self.store.finish, info, parts)
        if parts:
            await self.registry.drop_parts(info.id)

    # -- removal ---------------------------------------------------------------------------

    async def terminate(self, info: UploadInfo) -> None:
        """termination: keep a tombstone so the URL answers 410, then free the data (see
        _remove: a failed removal is retried, the tombstone stands)."""
        await self.registry.set_state(info.id, TERMINATED)
        await self._remove(info.id)
        metrics.UPLOADS_TERMINATED.inc()
        upload_event("terminated", info.id, offset=info.offset)

    async def expire(self, info: UploadInfo) -> bool:
        """Remove an expired upload once: only the worker or instance that wins the state
        change removes it (and counts it). The caller holds the upload's lock."""
        if not await self.registry.set_state_if(info.id, ACTIVE, EXPIRED):
            return False
        await self._remove(info.id)
        metrics.UPLOADS_EXPIRED.inc()
        upload_event("expired", info.id, offset=info.offset)
        return True

    async def _remove(self, upload_id: str) -> None:
        """Free a gone upload's bytes (on a worker thread: a remote store is slow) and its lock.

        The state change came first, so a failure here loses nothing the client sees (the
        URL answers 410 either way): the removal is logged and retried by the background
        sweeps of this process (retry_removals) instead of failing the request.
        """
        try:
            await anyio.to_thread.run_sync(self.store.remove, upload_id)
        except Exception as exc:  # BackendUnavailable (EIO, read-only), a remote store's own
            self.unremoved.add(upload_id)
            log.error(
                "upload %s is gone but its data could not be removed (retried later): %s",
                upload_id,
                exc,
            )
            return
        await self.forget_lock(upload_id)

    async def forget_lock(self, upload_id: str) -> None:
        try:
            await self.locker.forget(upload_id)
        except Exception as exc:
            log.warning("upload %s: dropping its lock files failed: %s", upload_id, exc)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect the backends, then start the background tasks: once per process, from the
        lifespan or the first request (mounted apps get no lifespan events), whichever comes
        first.

        One attempt at a time, and nobody queues behind it: while an attempt is in progress
        (a database that accepts connections but does not answer can take a connect
        timeout), every other caller gets BackendUnavailable at once (503 + Retry-After). A
        failed attempt leaves the core unstarted; the next request tries again, and so does a
        background retry with backoff (a load balancer that waits for /ready sends none).
        After stop_background nothing starts again.
        """
        if self.started:
            return
        if self.stopped:
            raise BackendUnavailable("server is shutting down")
        task = self._start_task
        if task is not None and not task.done():
            raise BackendUnavailable("server is starting; retry later", retry_after=1)
        attempt = self._begin_start()
        try:
            # shielded: a request cancelled while waiting does not cut the attempt short
            await asyncio.shield(attempt)
        except asyncio.CancelledError:
            waiting = asyncio.current_task()
            if attempt.cancelled() and waiting is not None and not waiting.cancelling():
                # the attempt, not this caller, was cancelled: stop_background
                raise BackendUnavailable("server is shutting down") from None
            raise

    def start_soon(self) -> None:
        """Begin a start attempt without waiting for it, unless the core is started or
        stopped, an attempt is in progress, or the background retry is backing off. The
        readiness probe calls it: a mounted app (no lifespan) behind a load balancer that
        waits for /ready before it sends uploads gets started too."""
        if self.started or self.stopped:
            return
        busy = (self._start_task, self._start_retry)
        if any(task is not None and not task.done() for task in busy):
            return
        self._begin_start()

    def _begin_start(self) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._start_attempt())
        task.add_done_callback(_retrieve)  # a caller that was cancelled never awaits it
        self._start_task = task
        return task

    async def _start_attempt(self) -> None:
        try:
            await self.backends.start()
        except Exception:
            self._schedule_start_retry()
            raise
        if self.stopped:  # stopped while connecting: undo, start nothing
            await self.backends.close()
            return
        loop = asyncio.get_running_loop()
        self._background = [
            loop.create_task(upkeep.cleanup_forever(self)),
            loop.create_task(upkeep.repair_forever(self)),
        ]
        self.hooks.start()
        for service in self.services:
            service.start()
        self.started = True

    def _schedule_start_retry(self) -> None:
        if self.stopped or (self._start_retry is not None and not self._start_retry.done()):
            return
        self._start_retry = asyncio.get_running_loop().create_task(self._retry_start())

    async def _retry_start(self) -> None:
        """Background: start again after a failed attempt, backing off up to START_RETRY_MAX
        seconds between attempts, until started (by this or by a request) or stopped."""
        delay = START_RETRY_FIRST
        while not (self.started or self.stopped):
            await anyio.sleep(delay)
            delay = min(delay * 2, START_RETRY_MAX)
            try:
                await self.start()
            except BackendUnavailable as exc:
                log.warning("backends still unavailable (retrying in %.1fs): %s", delay, exc)
            except Exception:
                log.exception("starting the backends failed (retrying in %.1fs)", delay)
        self._start_retry = None

    async def stop_background(self) -> None:
        """Cancel background tasks and disconnect the backends (lifespan shutdown).

        Every backend is closed, also after a start that failed part-way, and nothing starts
        again afterwards: a later request gets 503."""
        self.stopped = True
        tasks = [*self._background, self._start_retry, self._start_task]
        self._background, self._start_retry = [], None
        for service in self.services:
            await service.stop()
        await self.hooks.stop()
        for task in tasks:
            if task is not None and not task.done():
                task.cancel()
        for task in tasks:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self.started = False
        try:
            await self.backends.close()
        except Exception:
            log.exception("closing the backends failed")


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a start attempt's outcome as seen (its callers got it, or went away)."""
    if not task.cancelled():
        task.exception()


# Bytes given back after ENOSPC so the registry (often on the same disk) can record the offset.
REGISTRY_ROOM = 256 * 1024


def _keep_what_reached_disk(writer: Writer, store: Store, upload_id: str, acked: int) -> int:
    """After ENOSPC keep the bytes that made it to the store, made durable; else cut back.

    A completely full disk leaves SQLite no room to commit the new offset, so the upload is
    cut back by REGISTRY_ROOM first (never below the offset already recorded).
    """
    try:
        writer.discard_after(max(acked, store.size(upload_id) - REGISTRY_ROOM))
        return writer.sync()
    except (OSError, BackendUnavailable):  # a failed sync confirms nothing past `acked`
        with contextlib.suppress(OSError, BackendUnavailable):  # else the next writer cuts
            writer.discard_after(acked)
        return acked
    finally:
        with contextlib.suppress(OSError, BackendUnavailable):
            writer.close()
