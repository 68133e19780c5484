"""The server core shared by every handler: settings, registry, store, locks and the upload
operations (create, receive bytes, terminate, expire) that need more than one of them.

Handlers stay thin: they parse headers with `protocol`, call one operation here and turn the
result into headers. Everything here is independent of Starlette except the ASGI `receive`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol

import anyio

from tusserver import metrics
from tusserver.config import Settings
from tusserver.hooks import Hooks
from tusserver.locks import WATCH_SECONDS, HeldLock, LockManager
from tusserver.logs import upload_event
from tusserver.protocol import TusError, check_upload_length
from tusserver.registry import ACTIVE, COMPLETE, EXPIRED, GONE_STATES, Registry, UploadInfo
from tusserver.storage import FileStore, Store, StoreFull, Writer
from tusserver.transfer import Observer, Outcome, Receive, Sink, pump

log = logging.getLogger("tusserver")

VerifyHook = Callable[[Outcome], None]

# Every core of this process, so a server shutdown can reach them (see begin_shutdown_all).
_LIVE_CORES: weakref.WeakSet[TusCore] = weakref.WeakSet()


def begin_shutdown_all() -> None:
    """Graceful shutdown started (SIGTERM): every in-flight body saves what it has and ends."""
    for core in list(_LIVE_CORES):
        core.begin_shutdown()


class Service(Protocol):
    """A background service of one worker process (see TusCore.services)."""

    def start(self) -> None: ...

    async def stop(self) -> None: ...


class TusCore:
    """Owns the shared state of one server (one per worker process)."""

    def __init__(self, settings: Settings, store: Store | None = None):
        self.settings = settings
        self.store: Store = store or FileStore(settings.upload_dir)
        self.registry = Registry(settings.db_path)
        self.locks = LockManager(settings.upload_dir)
        self._background: asyncio.Task[None] | None = None
        # tusd-compatible hooks; inert (every `wants()` False) when nothing is configured
        self.hooks = Hooks(settings, self.registry, self.store)
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

    def load(self, upload_id: str) -> UploadInfo:
        """The upload's info; 404 if unknown, 410 if terminated or expired."""
        info = self.registry.get(upload_id)
        if info is None:
            raise TusError(404, "upload not found")
        if info.state in GONE_STATES:
            raise TusError(410, f"upload {info.state}")
        if info.expired_at(time.time()):
            self.expire(info)
            raise TusError(410, "upload expired")
        return info

    @contextlib.asynccontextmanager
    async def locked(self, upload_id: str) -> AsyncIterator[tuple[UploadInfo, HeldLock]]:
        """Hold the upload's lock and yield its fresh info (taking over from stale holders).

        The info is read once, under the lock (one registry read per request, not two). For
        an unknown or removed upload the lock file just created is removed again, so unknown
        ids leave no lock files behind.
        """
        async with self.locks.hold(upload_id, self.settings.lock_timeout) as lock:
            try:
                info = self.load(upload_id)
            except TusError:
                self.locks.remove(upload_id)
                raise
            yield info, lock

    def expires_for_new_activity(self) -> float | None:
        """Expiry is sliding: every accepted chunk pushes it out again."""
        return time.time() + self.settings.expiration if self.settings.expiration > 0 else None

    # -- creation --------------------------------------------------------------------------

    def new_id(self) -> str:
        """Random, URL-safe, 128-bit id (hex, like tusd's)."""
        return secrets.token_hex(16)

    def create(self, info: UploadInfo) -> UploadInfo:
        """Persist a new upload: empty data file first, then the registry row."""
        self._prepare_create(info)
        self.store.create(info.id)
        return self._register(info)

    async def create_async(self, info: UploadInfo) -> UploadInfo:
        """create() with the data file made on a worker thread (POST's path).

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
                    self.store.remove(info.id)

            future.add_done_callback(remove_made)
            raise
        return self._register(info)

    def _make_files(self, upload_id: str) -> None:
        """The new upload's data file, and its lock file as a second name of it (no inode
        to allocate when PATCH takes the lock; see LockManager.link)."""
        self.store.create(upload_id)
        if isinstance(self.store, FileStore):
            self.locks.link(upload_id, str(self.store.path(upload_id)))

    def _prepare_create(self, info: UploadInfo) -> None:
        """Checks and initial state of a new upload (before its data file exists)."""
        if info.length is not None:
            self.check_length(info.length)
        self.check_space(info.length)
        if info.finished:  # a zero-length upload is complete the moment it exists
            info.state, info.expires = COMPLETE, None
        else:
            info.expires = self.expires_for_new_activity()

    def _register(self, info: UploadInfo) -> UploadInfo:
        """The registry row of a new upload whose data file exists (removed if this fails)."""
        try:
            self.registry.create(info)
        except BaseException:
            self.store.remove(info.id)
            raise
        metrics.UPLOADS_CREATED.inc()
        upload_event("created", info.id, length=info.length)
        if info.finished:
            metrics.upload_finished(info.created)
            upload_event("finished", info.id, offset=0)
        return info

    # -- receiving bytes -------------------------------------------------------------------

    def remaining(self, info: UploadInfo) -> int | None:
        """How many more bytes this upload may take (length, or max size when deferred)."""
        if info.length is not None:
            return info.length - info.offset
        if self.settings.max_size:
            return self.settings.max_size - info.offset
        return None

    def declare_length(self, info: UploadInfo, length: int) -> None:
        """creation-defer-length: the length arrives with a later PATCH, then is immutable."""
        if info.length is not None:
            if info.length != length:
                raise TusError(400, "Upload-Length cannot be changed once set")
            return
        if length < info.offset:
            raise TusError(400, "Upload-Length is smaller than the current offset")
        self.check_length(length)
        self.registry.update(info.id, length=length)
        info.length = length

    async def receive(
        self,
        receive: Receive,
        info: UploadInfo,
        lock: HeldLock,
        *,
        observers: Sequence[Observer] = (),
        checkpoints: bool = True,
        verify: VerifyHook | None = None,
    ) -> Outcome:
        """Stream a request body into the upload at its current offset; record the new offset.

        The newer-request watcher runs beside the body pump: when it fires, the pump is
        cancelled and what was received is kept. `verify` may reject the chunk after the fact
        (e.g. a checksum mismatch): the file is then cut back and the offset left unchanged.
        With `checkpoints` the offset is also recorded once per second during long bodies.
        """
        try:
            self.check_capacity()
            return await self._count_receive(
                receive, info, lock, observers=observers, checkpoints=checkpoints, verify=verify
            )
        except TusError as exc:  # 460, 413, 503, 507: where to resume, so no HEAD is needed
            exc.headers.setdefault("Upload-Offset", str(info.offset))
            raise

    async def _count_receive(
        self,
        receive: Receive,
        info: UploadInfo,
        lock: HeldLock,
        *,
        observers: Sequence[Observer],
        checkpoints: bool,
        verify: VerifyHook | None,
    ) -> Outcome:
        """receive() once admitted: the body pump, counted in the active-upload gauge."""
        start = info.offset
        writer = self.store.writer(info.id, start)
        sink = Sink(writer, self.remaining(info), observers, concurrent=self.active_receives + 1)
        self.active_receives += 1
        metrics.ACTIVE_UPLOADS.inc()
        try:
            return await self._receive(
                receive, info, lock, writer, sink, Outcome(), checkpoints=checkpoints, verify=verify
            )
        finally:
            self.active_receives -= 1
            metrics.ACTIVE_UPLOADS.dec()
            metrics.BYTES_RECEIVED.inc(max(0, info.offset - start))

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
        """507 unless `length` more bytes fit above the --min-free-space reserve."""
        needed = self.settings.min_free_space + (length or 0)
        if needed and free_space(self.settings.upload_dir) < needed:
            raise TusError(507, "not enough storage space on the server; retry later")

    async def _receive(
        self,
        receive: Receive,
        info: UploadInfo,
        lock: HeldLock,
        writer: Writer,
        sink: Sink,
        outcome: Outcome,
        *,
        checkpoints: bool,
        verify: VerifyHook | None,
    ) -> Outcome:
        """receive() once the writer is open (see there)."""
        start = acked = info.offset

        async def checkpoint(received: int) -> None:
            nonlocal acked
            await anyio.to_thread.run_sync(writer.sync)
            acked = start + received
            self._record_offset(info, acked)

        try:
            await _watched(
                lock,
                outcome,
                self._stoppers,
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
        except TusError:
            try:
                writer.truncate(acked)
            finally:
                writer.close()
            self._record_offset(info, acked)
            raise
        except StoreFull:
            kept = _keep_what_reached_disk(writer, self.store, info.id, acked)
            try:
                self._record_offset(info, kept)
            except sqlite3.OperationalError:  # registry cannot commit either: acked stands
                self.store.writer(info.id, acked).close()  # cuts the file back to it
                info.offset = acked
            raise TusError(507, "not enough storage space; resume later") from None
        except BaseException:
            writer.close()
            raise
        try:
            await anyio.to_thread.run_sync(writer.sync)
        finally:
            writer.close()
        self._record_offset(info, start + outcome.received)
        return outcome

    def _record_offset(self, info: UploadInfo, offset: int) -> None:
        """Publish a durable offset; completes the upload when the last byte arrived."""
        info.offset = offset
        finished = info.finished
        if finished and info.state != COMPLETE:
            metrics.upload_finished(info.created)
            upload_event("finished", info.id, offset=offset)
        info.expires = None if finished else self.expires_for_new_activity()
        info.state = COMPLETE if finished else ACTIVE
        self.registry.update(info.id, offset=offset, expires=info.expires, state=info.state)

    # -- removal ---------------------------------------------------------------------------

    def terminate(self, info: UploadInfo) -> None:
        """termination: free the data, keep a tombstone so the URL answers 410."""
        self.registry.update(info.id, state="terminated")
        self.store.remove(info.id)
        self.locks.remove(info.id)
        metrics.UPLOADS_TERMINATED.inc()
        upload_event("terminated", info.id, offset=info.offset)

    def expire(self, info: UploadInfo) -> bool:
        """Remove an expired upload once (the worker that wins the state change does it)."""
        if not self.registry.set_state_if(info.id, ACTIVE, EXPIRED):
            return False
        self.store.remove(info.id)
        self.locks.remove(info.id)
        metrics.UPLOADS_EXPIRED.inc()
        upload_event("expired", info.id, offset=info.offset)
        return True

    async def cleanup_once(self) -> int:
        """Remove every expired upload that nobody is writing right now."""
        now = time.time()
        removed = 0
        for upload_id in self.registry.expired_ids(now):
            info = self.registry.get(upload_id)
            if info is None or not info.expired_at(now):
                continue
            try:
                async with self.locks.hold(upload_id, timeout=0):
                    removed += self.expire(info)
            except TusError:
                continue  # someone is uploading to it right now; not abandoned after all
        self.registry.prune_tombstones(now)
        return removed

    async def cleanup_forever(self) -> None:
        """Background task: expire abandoned uploads every cleanup interval."""
        interval = self.settings.cleanup_interval
        if self.settings.expiration <= 0 or interval <= 0:
            return
        while True:
            await anyio.sleep(interval)
            try:
                await self.cleanup_once()
            except Exception:
                log.exception("expiry cleanup failed")

    def start_background(self) -> None:
        """Start the expiry task once per process (idempotent; needs a running loop)."""
        if self._background is None:
            self._background = asyncio.get_running_loop().create_task(self.cleanup_forever())
            self.hooks.start()
            for service in self.services:
                service.start()

    async def stop_background(self) -> None:
        """Cancel background tasks (lifespan shutdown)."""
        task, self._background = self._background, None
        for service in self.services:
            await service.stop()
        await self.hooks.stop()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _watched(
    lock: HeldLock, outcome: Outcome, stoppers: set[Callable[[], None]], work: Awaitable[None]
) -> None:
    """Run `work`, cancelling it if a newer request asks for the upload (outcome: stopped)
    or the server shuts down (outcome: shutdown, via a callback put in `stoppers`).

    The watcher is a timer callback on the event loop (a check of the release file every
    WATCH_SECONDS) and a cancel scope, not a task: this runs for every PATCH, and a watcher
    task (start, sleep, cancel) measured as a tenth of the small-upload CPU time. A small
    body is done before the first check is due, so all it costs is one timer set and cancelled.
    Errors from `work` propagate as they are.
    """
    scope = anyio.CancelScope()
    loop = asyncio.get_running_loop()
    timer: asyncio.TimerHandle

    def stop(reason: str) -> None:
        if outcome.interrupted is None:
            outcome.interrupted = reason
        scope.cancel()

    def watch() -> None:
        nonlocal timer
        if lock.asked_to_release():
            stop("stopped")
        else:
            timer = loop.call_later(WATCH_SECONDS, watch)

    def on_shutdown() -> None:
        stop("shutdown")

    timer = loop.call_later(WATCH_SECONDS, watch)
    stoppers.add(on_shutdown)
    try:
        with scope:
            await work
    finally:
        stoppers.discard(on_shutdown)
        timer.cancel()


def free_space(path: Path) -> int:
    """Bytes available to this (unprivileged) process on the file system holding `path`."""
    try:
        stat = os.statvfs(path)
    except OSError:
        return 0
    return stat.f_bavail * stat.f_frsize


# Bytes given back after ENOSPC so the registry (often on the same disk) can record the offset.
REGISTRY_ROOM = 256 * 1024


def _keep_what_reached_disk(writer: Writer, store: Store, upload_id: str, acked: int) -> int:
    """After ENOSPC keep the bytes that made it to the file, made durable; else cut back.

    A completely full disk leaves SQLite no room to commit the new offset, so the file is cut
    back by REGISTRY_ROOM first (never below the offset already recorded).
    """
    try:
        kept = max(acked, store.size(upload_id) - REGISTRY_ROOM)
        writer.truncate(kept)
        writer.sync()
        return kept
    except OSError:
        writer.truncate(acked)
        return acked
    finally:
        writer.close()
