"""The server core shared by every handler: settings, registry, store, locks and the upload
operations (create, receive bytes, terminate, expire) that need more than one of them.

Handlers stay thin: they parse headers with `protocol`, call one operation here and turn the
result into headers. Everything here is independent of Starlette except the ASGI `receive`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import anyio

from tusserver.config import Settings
from tusserver.locks import HeldLock, LockManager
from tusserver.protocol import TusError, check_upload_length
from tusserver.registry import ACTIVE, COMPLETE, EXPIRED, GONE_STATES, Registry, UploadInfo
from tusserver.storage import FileStore, Store, StoreFull, Writer
from tusserver.transfer import Observer, Outcome, Receive, Sink, pump

log = logging.getLogger("tusserver")

VerifyHook = Callable[[Outcome], None]


class TusCore:
    """Owns the shared state of one server (one per worker process)."""

    def __init__(self, settings: Settings, store: Store | None = None):
        self.settings = settings
        self.store: Store = store or FileStore(settings.upload_dir)
        self.registry = Registry(settings.db_path)
        self.locks = LockManager(settings.upload_dir)
        self._background: asyncio.Task[None] | None = None

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

        Existence is checked before the lock, so unknown ids never create lock files.
        """
        self.load(upload_id)
        async with self.locks.hold(upload_id, self.settings.lock_timeout) as lock:
            yield self.load(upload_id), lock

    def expires_for_new_activity(self) -> float | None:
        """Expiry is sliding: every accepted chunk pushes it out again."""
        return time.time() + self.settings.expiration if self.settings.expiration > 0 else None

    # -- creation --------------------------------------------------------------------------

    def new_id(self) -> str:
        """Random, URL-safe, 128-bit id (hex, like tusd's)."""
        return secrets.token_hex(16)

    def create(self, info: UploadInfo) -> UploadInfo:
        """Persist a new upload: empty data file first, then the registry row."""
        if info.length is not None:
            check_upload_length(info.length, self.settings.max_size)
        info.expires = self.expires_for_new_activity()
        self.store.create(info.id)
        try:
            self.registry.create(info)
        except BaseException:
            self.store.remove(info.id)
            raise
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
        check_upload_length(length, self.settings.max_size)
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
        start = info.offset
        writer = self.store.writer(info.id, start)
        sink = Sink(writer, self.remaining(info), observers)
        outcome = Outcome()
        acked = start

        async def checkpoint(received: int) -> None:
            nonlocal acked
            await anyio.to_thread.run_sync(writer.sync)
            acked = start + received
            self._record_offset(info, acked)

        try:
            await _watched(
                lock,
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
        except TusError:
            try:
                writer.truncate(acked)
            finally:
                writer.close()
            self._record_offset(info, acked)
            raise
        except StoreFull:
            self._record_offset(info, _keep_what_reached_disk(writer, self.store, info.id, acked))
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
        info.expires = None if finished else self.expires_for_new_activity()
        info.state = COMPLETE if finished else ACTIVE
        self.registry.update(info.id, offset=offset, expires=info.expires, state=info.state)

    # -- removal ---------------------------------------------------------------------------

    def terminate(self, info: UploadInfo) -> None:
        """termination: free the data, keep a tombstone so the URL answers 410."""
        self.registry.update(info.id, state="terminated")
        self.store.remove(info.id)
        self.locks.remove(info.id)

    def expire(self, info: UploadInfo) -> bool:
        """Remove an expired upload once (the worker that wins the state change does it)."""
        if not self.registry.set_state_if(info.id, ACTIVE, EXPIRED):
            return False
        self.store.remove(info.id)
        self.locks.remove(info.id)
        log.info("upload %s expired", info.id)
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

    async def stop_background(self) -> None:
        """Cancel background tasks (lifespan shutdown)."""
        task, self._background = self._background, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _watched(lock: HeldLock, outcome: Outcome, work: Awaitable[None]) -> None:
    """Run `work`, cancelling it if a newer request asks for the upload (outcome: stopped).

    Errors from `work` are re-raised as they are, not wrapped in an ExceptionGroup.
    """
    error: Exception | None = None
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            await lock.released_by_newer_request()
            outcome.interrupted = "stopped"
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        try:
            await work
        except Exception as exc:
            error = exc
        tg.cancel_scope.cancel()
    if error is not None:
        raise error


def _keep_what_reached_disk(writer: Writer, store: Store, upload_id: str, acked: int) -> int:
    """After ENOSPC keep the bytes that made it to the file, made durable; else cut back."""
    try:
        writer.sync()
        return store.size(upload_id)
    except OSError:
        writer.truncate(acked)
        return acked
    finally:
        writer.close()
