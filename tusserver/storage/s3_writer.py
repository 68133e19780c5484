"""The S3 store's writer: one request's bytes, cut into multipart parts while they stream.

An upload in S3 is its recorded parts (numbers, ETags and sizes live in the registry, with
the offset) plus, when the recorded offset is not at a part's end, a tail object holding the
bytes after the last part (a request's remainder below the part minimum). A writer:

- stages the stream in scratch files of the preferred part size (the first one starts with
  the recorded tail, read back from S3 on the first write), each one handed to the store's
  thread pool once full, at most --s3-max-concurrent-parts of them in flight: `write`
  blocks for a free slot, which is the back pressure on the request body;
- numbers parts only through `reserve` (the registry's counter), in byte order, so a stale
  writer can never replace a part another writer recorded;
- reports as durable only what S3 holds: the leading completed parts (`checkpoint`), and on
  `sync` also the remainder, as a part (big enough, or the upload's end) or a tail object
  (the whole upload as one PutObject when it never needed a part);
- never blocks the event loop: `progress`, `committed` and `close` only touch memory (a
  superseded tail object is deleted on the pool).

Memory per writer is the copy buffers of the current write, whatever the part or upload size.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING

from tusserver.errors import BackendUnavailable, StoreFull
from tusserver.registry.base import COMPLETE, Part, UploadInfo
from tusserver.storage.base import Progress, Reserve, Writer
from tusserver.storage.s3_common import (
    MAX_PARTS,
    Scratch,
    delete_file,
    log,
    mapped,
    tail_key,
)

if TYPE_CHECKING:
    from tusserver.storage.s3 import S3Store


class _Job:
    """One part on its way to S3: bytes [start, end) of the upload, staged in a file."""

    __slots__ = (
        "abandoned",
        "checksum",
        "done",
        "end",
        "error",
        "future",
        "numbered",
        "part",
        "path",
        "payload_sha256",
        "previous",
        "start",
    )

    def __init__(self, scratch: Scratch, previous: _Job | None):
        self.start, self.end = scratch.start, scratch.end
        self.path = scratch.path
        self.checksum = scratch.checksum.value()
        self.payload_sha256 = scratch.checksum.payload_sha256()
        # numbers are reserved in byte order: each job waits for the one before
        self.previous = previous
        self.numbered = threading.Event()
        self.done = threading.Event()
        self.abandoned = False  # discarded or closed: its result is ignored
        self.part: Part | None = None
        self.error: BaseException | None = None
        self.future: Future[None] | None = None

    @property
    def size(self) -> int:
        return self.end - self.start


class S3Writer(Writer):
    """Appends one request's bytes to an upload kept as S3 parts (see the module docstring).

    State: the recorded parts (ending at S) and offset O (the tail object holds [S, O) when
    O > S); the new parts of this writer not recorded yet (`_jobs`, in byte order); the
    current scratch file (the bytes after the last new part)."""

    inline_writes = False  # a full part waits for `reserve`, which needs the event loop

    def __init__(
        self, store: S3Store, info: UploadInfo, parts: Sequence[Part], reserve: Reserve | None
    ):
        self._store = store
        self._id = info.id
        self._key = store.key(info.id)
        self._length = info.length
        self._metadata = dict(info.metadata)
        self.sizes = store.part_sizes(info.length)
        self._reserve = reserve
        self._lock = threading.Lock()  # state shared with pool threads and the event loop
        self._ref_lock = threading.Lock()  # one CreateMultipartUpload per writer
        self._parts = list(parts)
        self._parts_end = sum(part.size for part in parts)
        self._offset = info.offset
        if self._offset < self._parts_end:
            raise ValueError(
                f"upload {info.id}: recorded parts end at {self._parts_end}, "
                f"past its offset {self._offset}"
            )
        self._complete = info.state == COMPLETE
        self._ref = info.store_ref
        self._ref_recorded = info.store_ref is not None
        self._reported_ref: str | None = None
        self._jobs: list[_Job] = []
        self._last_job: _Job | None = None
        self._scratch: Scratch | None = None
        self._loaded = False  # the recorded tail is staged (or there is none)
        self._slots = threading.BoundedSemaphore(store.max_concurrent_parts)
        self._closed = False
        self._logged = False
        self.failure: Exception | None = None

    # -- the interface --------------------------------------------------------------------------

    def write(self, pieces: Sequence[bytes]) -> int:
        """Stage the pieces; every full part goes to the pool (blocking while the writer has
        --s3-max-concurrent-parts in flight). Raises the failure of an earlier part: S3 is
        failing, the body stops (what is durable is what checkpoint reported)."""
        self._check_usable()
        views = [memoryview(piece) for piece in pieces if piece]
        total = sum(len(view) for view in views)
        if not total:
            return 0
        if not self._loaded:
            self._load_tail()
        scratch = self._current()
        batch: list[memoryview] = []
        room = scratch.room
        for view in views:
            while len(view) >= room:  # this piece fills the part
                batch.append(view[:room])
                view = view[room:]
                scratch.append(batch)
                batch = []
                self._hand_over(scratch)
                scratch = self._current()
                room = scratch.room
            if view:
                batch.append(view)
                room -= len(view)
        if batch:
            scratch.append(batch)
        return total

    def checkpoint(self, limit: int) -> int:
        """The end of the leading completed new parts that end by `limit` (no waiting, no
        upload); the recorded offset when there are none."""
        with self._lock:
            return self._durable(limit)

    def sync(self) -> int:
        """Wait for the parts in flight, then make the remainder durable: the upload's last
        part (or the whole upload as one object), a part if it is big enough, else a tail
        object. Returns everything written, or on a failure the end of the leading completed
        parts, with `failure` set."""
        self._check_open()
        for job in list(self._jobs):
            job.done.wait()
        if self.failure is not None:
            return self._failed_result()
        try:
            if self._scratch is None and self._ends_with_recorded_tail():
                self._load_tail()  # it becomes the last part (or the whole object)
        except Exception as exc:
            self._fail(mapped(exc, "read the end of an upload", missing=True))
            return self._failed_result()
        scratch = self._scratch
        if scratch is None:
            with self._lock:
                return self._durable()
        try:
            if self._length is not None and scratch.end == self._length:
                if not self._parts and not self._jobs:  # small: one object, no multipart
                    self._scratch = None
                    scratch.close_file()
                    try:
                        self._store.put_final(self._key, scratch, self._metadata)
                    finally:
                        delete_file(scratch.path)
                else:
                    self._send_now(scratch)
            elif scratch.size >= self.sizes.minimum:
                self._send_now(scratch)
            elif (scratch.start, scratch.end) != (self._parts_end, self._offset):
                self._store.put_tail(tail_key(self._key, scratch.start, scratch.end), scratch)
        except Exception as exc:
            self._fail(mapped(exc, "make upload data durable", missing=True))
            return self._failed_result()
        return scratch.end

    def progress(self, offset: int) -> Progress:
        """The completed new parts ending at or before `offset`, and the multipart upload's
        id if this writer created it and it is not recorded yet."""
        with self._lock:
            parts = []
            for job in self._jobs:
                if job.part is None or job.end > offset:
                    break
                parts.append(job.part)
            # with parts, always the multipart upload they belong to: the registry refuses
            # them if another writer recorded a different one meanwhile
            ref = self._ref if parts or not self._ref_recorded else None
            self._reported_ref = ref
            return Progress(ref=ref, parts=tuple(parts))

    def committed(self, offset: int) -> None:
        """The parts behind `offset` are recorded; a tail object it supersedes is deleted in
        the background (best effort: finish and remove delete every tail anyway)."""
        with self._lock:
            old_tail = self._tail()
            count = 0
            for job in self._jobs:
                if job.part is None or job.end > offset:
                    break
                count += 1
            for job in self._jobs[:count]:
                assert job.part is not None
                self._parts.append(job.part)
                self._parts_end = job.end
            del self._jobs[:count]
            self._offset = max(self._offset, offset)
            if self._reported_ref is not None and self._reported_ref == self._ref:
                self._ref_recorded = True
            new_tail = self._tail()
        if old_tail is not None and old_tail != new_tail:
            self._store.delete_later(tail_key(self._key, *old_tail))

    def discard_after(self, offset: int) -> None:
        """Go back to the recorded offset: parts in flight are abandoned (not waited for),
        the scratch is dropped, the recorded tail is read again by the next write."""
        position = self.position
        if offset == position:
            return
        if offset != self._offset:
            raise ValueError(
                f"cannot discard after {offset}: the writer holds {self._offset}..{position}"
                " and can only go back to the recorded offset"
            )
        with self._lock:
            for job in self._jobs:
                job.abandoned = True
            self._jobs.clear()
            self.failure = None
        self._drop_scratch()
        self._loaded = False

    def close(self) -> None:
        """Abandon what is not recorded and delete the scratch file (parts in flight delete
        their own); nothing touches the network."""
        self._closed = True
        with self._lock:
            for job in self._jobs:
                if job.part is None:
                    job.abandoned = True
        self._drop_scratch()

    # -- state ------------------------------------------------------------------------------------

    @property
    def position(self) -> int:
        """The upload's offset after everything written."""
        if self._scratch is not None:
            return self._scratch.end
        with self._lock:
            return self._jobs[-1].end if self._jobs else self._offset

    def _durable(self, limit: int | None = None) -> int:
        """The end of the leading completed new parts (ending by `limit`, if given), at least
        the recorded offset (the first new part holds the recorded tail: that stays valid
        until it is recorded)."""
        end = self._offset
        for job in self._jobs:
            if job.part is None or (limit is not None and job.end > limit):
                break
            end = max(end, job.end)
        return end

    def _tail(self) -> tuple[int, int] | None:
        """The recorded tail object's range, if there is one."""
        return (self._parts_end, self._offset) if self._offset > self._parts_end else None

    def _ends_with_recorded_tail(self) -> bool:
        """The upload is complete at the recorded offset, which is not a part's end: its
        length was declared equal to the offset (an empty request). Nothing was written.
        (Not for an upload recorded complete: it is assembled, its parts and tail gone.)"""
        return (
            not self._complete
            and self._length == self._offset
            and self._tail() is not None
            and not self._loaded
            and not self._jobs
        )

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("write to a closed S3 writer")

    def _check_usable(self) -> None:
        self._check_open()
        if self.failure is not None:
            raise self.failure

    def _failed_result(self) -> int:
        """What sync returns after a failure: the durable offset for the core to record (it
        then raises `failure`), or the failure itself when it is not S3 being unavailable or
        full (FileNotFoundError: the upload was removed meanwhile)."""
        failure = self.failure
        if failure is not None and not isinstance(failure, (BackendUnavailable, StoreFull)):
            raise failure
        with self._lock:
            return self._durable()

    def _fail(self, exc: BaseException) -> None:
        """Note the first failure (logged once, without secrets: mapped messages carry
        operations and error codes only)."""
        with self._lock:
            if self.failure is None:
                self.failure = exc if isinstance(exc, Exception) else RuntimeError(str(exc))
            first = not self._logged
            self._logged = True
        if first:
            log.error("upload %s: storing in S3 failed: %s", self._id, exc)

    # -- staging ----------------------------------------------------------------------------------

    def _load_tail(self) -> None:
        """Start the first scratch file with the recorded tail's bytes (FileNotFoundError if
        the tail object is gone: the upload was removed)."""
        start, offset = self._parts_end, self._offset
        tail = offset - start
        # the first part covers the whole tail
        scratch = self._store.new_scratch(self._id, start, max(self.sizes.preferred, tail))
        try:
            if tail:
                self._store.read_into(tail_key(self._key, start, offset), tail, scratch)
        except BaseException:
            scratch.discard()
            raise
        self._scratch = scratch
        self._loaded = True

    def _current(self) -> Scratch:
        """The scratch file the next bytes go to (a new one after a full part)."""
        if self._scratch is None:
            self._scratch = self._store.new_scratch(self._id, self.position, self.sizes.preferred)
        return self._scratch

    def _drop_scratch(self) -> None:
        scratch, self._scratch = self._scratch, None
        if scratch is not None:
            scratch.discard()

    def _hand_over(self, scratch: Scratch) -> None:
        """Queue a full part on the store's pool once one of the writer's slots is free."""
        scratch.close_file()
        self._scratch = None
        self._slots.acquire()
        if self.failure is not None or self._closed:  # while this one waited
            self._slots.release()
            delete_file(scratch.path)
            raise self.failure or ValueError("write to a closed S3 writer")
        job = self._new_job(scratch)
        try:
            job.future = self._store.pool.submit(self._run, job, True)
        except RuntimeError as exc:  # the pool is shut down: the server is stopping
            job.error = BackendUnavailable(f"S3 store is closed: {exc}")
            job.numbered.set()
            job.done.set()
            self._slots.release()
            delete_file(scratch.path)
            self._fail(job.error)
            raise job.error from exc

    def _new_job(self, scratch: Scratch) -> _Job:
        with self._lock:
            job = _Job(scratch, self._last_job)
            self._jobs.append(job)
            self._last_job = job
        return job

    def _send_now(self, scratch: Scratch) -> None:
        """Upload the scratch as a part on this thread (sync's remainder)."""
        scratch.close_file()
        self._scratch = None
        job = self._new_job(scratch)
        self._run(job, False)
        if job.error is not None:
            raise job.error

    # -- parts (pool threads) --------------------------------------------------------------------

    def _run(self, job: _Job, pooled: bool) -> None:
        """Send one part; its scratch file is deleted whatever happens."""
        try:
            self._send(job)
        except Exception as exc:
            job.error = mapped(exc, "upload a part", missing=True)
        finally:
            job.numbered.set()
            delete_file(job.path)
            if pooled:
                self._slots.release()
            job.done.set()
        if pooled and job.error is not None and not job.abandoned:
            self._fail(job.error)

    def _send(self, job: _Job) -> None:
        if job.previous is not None:
            job.previous.numbered.wait()
            job.previous = None  # no chain of finished jobs kept alive
        if job.abandoned:
            return
        number = self._reserve_number()
        job.numbered.set()
        if number > MAX_PARTS:
            raise StoreFull(errno.EFBIG, f"S3 allows {MAX_PARTS:,} parts (upload {self._id})")
        if job.abandoned:
            return
        etag = self._store.upload_part(
            self._key,
            self._multipart(),
            number,
            job.path,
            job.size,
            job.checksum,
            job.payload_sha256,
        )
        job.part = Part(number, etag, job.size, job.checksum)

    def _reserve_number(self) -> int:
        if self._reserve is None:
            raise RuntimeError("an S3 writer needs `reserve` to number parts")
        try:
            return self._reserve()
        except KeyError:  # the registry no longer knows the upload
            raise FileNotFoundError(errno.ENOENT, f"upload {self._id} is gone") from None

    def _multipart(self) -> str:
        """The upload's multipart upload id, created on the first part of the upload."""
        with self._ref_lock:
            if self._ref is None:
                ref = self._store.create_multipart(self._key, self._metadata)
                with self._lock:
                    self._ref = ref
                    self._ref_recorded = False
            return self._ref
