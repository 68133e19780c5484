"""File store: one data file per upload, named by its id, inside the upload directory.

Ids are validated by the protocol layer before they get here and checked again below, so a
path can never leave the directory. Writes use writev on a raw fd: no Python-level buffer
copies, and `sync` is an fdatasync so offsets recorded afterwards never run ahead of the data.

File system errors leave through one mapping (`_translate`), so the server answers each
with its own status and never a 500: no space (ENOSPC, a quota) is `StoreFull` (507), a new
upload's name already taken is `AlreadyExists` (409: two creations racing for an id chosen by
a hook), anything else (EIO, a read-only remount, permissions) is `BackendUnavailable` (503).
`FileNotFoundError` stays itself where the caller decides what a missing file means: reading
a removed upload, writing to one that vanished, joining a partial that is gone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path

from tusserver.errors import AlreadyExists, BackendUnavailable
from tusserver.protocol import is_valid_upload_id
from tusserver.registry.base import Part, UploadInfo
from tusserver.storage.base import (
    READ_CHUNK,
    Reader,
    Reserve,
    Store,
    StoreFull,
    Writer,
    advance,
)

_COPY_CHUNK = 8 * 1024 * 1024
# Start the disk write of every this many appended bytes at once (asynchronously), so the
# fdatasync before each acknowledgement only waits for the last piece: a PATCH of 8 MiB then
# overlaps its disk writes with its network transfer instead of paying for them at the end.
WRITEBACK_BYTES = 1024 * 1024


def _translate(
    exc: OSError, what: str, *, missing: bool = False, creating: bool = False
) -> Exception | None:
    """The one mapping of the store's OSErrors (see the module docstring): the exception to
    raise instead of `exc`, or None to let `exc` itself propagate (already StoreFull, or a
    missing file where the caller asked for it with `missing`). `creating`: a name that
    exists already means another upload took the id."""
    if isinstance(exc, StoreFull) or (missing and isinstance(exc, FileNotFoundError)):
        return None
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreFull(exc.errno, f"no space left for upload data ({what})")
    if creating and isinstance(exc, FileExistsError):
        return AlreadyExists(f"upload data file exists already ({what})")
    return BackendUnavailable(f"file store cannot {what}: {exc.strerror or exc}")


class _Mapped:
    """`with _Mapped("do x"):` raises what `_translate` maps an OSError of the block to."""

    __slots__ = ("creating", "missing", "what")

    def __init__(self, what: str, *, missing: bool = False, creating: bool = False):
        self.what = what
        self.missing = missing
        self.creating = creating

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, traceback: object) -> None:
        if isinstance(exc, OSError):
            mapped = _translate(exc, self.what, missing=self.missing, creating=self.creating)
            if mapped is not None:
                raise mapped from exc


class FileWriter(Writer):
    """Appends with writev at the end of the data file.

    At offset 0 a missing data file is created (a new upload); past it the file must exist:
    if it vanished (the upload was removed while a writer that lost its lock went on) the
    writer raises FileNotFoundError instead of making a file of zeros up to the offset.

    After a failed fdatasync nothing written since the last good one can be called durable
    (the kernel may have dropped the pages, and a second fdatasync reports success), so every
    later `sync` fails too: the caller keeps only what an earlier sync confirmed.
    """

    def __init__(self, path: Path, offset: int):
        flags = os.O_WRONLY | (os.O_CREAT if offset == 0 else 0)
        with _Mapped("open upload data for writing", missing=True):
            self.fd = os.open(path, flags, 0o644)
            try:
                os.ftruncate(self.fd, offset)
                os.lseek(self.fd, offset, os.SEEK_SET)
            except BaseException:
                os.close(self.fd)
                raise
        self._opened = self._position = self._flushed = offset
        self._sync_failed: OSError | None = None

    def write(self, pieces: Sequence[bytes]) -> int:
        total = sum(len(p) for p in pieces)
        done = 0
        views = [memoryview(p) for p in pieces if p]
        while done < total:
            try:
                n = os.writev(self.fd, views)
            except OSError as exc:  # not a `with` block: this runs for every chunk
                mapped = _translate(exc, "write upload data")
                if mapped is None:
                    raise
                raise mapped from exc
            done += n
            # per writev, so after a full disk the position still says what reached the file
            self._position += n
            views = advance(views, n)
        if self._position - self._flushed >= WRITEBACK_BYTES:
            _start_writeback(self.fd, self._flushed, self._position - self._flushed)
            self._flushed = self._position
        return total

    def sync(self) -> int:
        """fdatasync: every byte written is durable, so the offset is where the writer is."""
        with _Mapped("make upload data durable"):
            if self._sync_failed is not None:
                raise self._sync_failed
            try:
                os.fdatasync(self.fd)
            except OSError as exc:
                self._sync_failed = exc
                raise
        return self._position

    def discard_after(self, offset: int) -> None:
        if not self._opened <= offset <= self._position:
            raise ValueError(
                f"cannot discard after {offset}: the writer holds {self._opened}..{self._position}"
            )
        with _Mapped("discard upload data"):
            os.ftruncate(self.fd, offset)
            os.lseek(self.fd, offset, os.SEEK_SET)
        self._position = self._flushed = offset

    def close(self) -> None:
        with _Mapped("close upload data"):
            os.close(self.fd)


def _start_writeback(fd: int, start: int, length: int) -> None:
    """Ask the kernel to start writing a range to disk now, without waiting (Linux: fadvise
    DONTNEED starts writeback of dirty pages, then drops the clean ones from the cache)."""
    with contextlib.suppress(OSError, AttributeError):
        os.posix_fadvise(fd, start, length, os.POSIX_FADV_DONTNEED)


class FileReader(Reader):
    """A range of the data file, read with pread: one buffer of `chunk` bytes at a time, and no
    shared file position, so the chunks may be read on any worker thread."""

    def __init__(self, path: Path, start: int, end: int | None, chunk: int):
        if start < 0 or (end is not None and end < start) or chunk <= 0:
            raise ValueError(f"invalid read of {start}..{end} in chunks of {chunk}")
        with _Mapped("open upload data for reading", missing=True):
            self._fd = os.open(path, os.O_RDONLY)
        self._position = start
        self._end = end
        self._chunk = chunk
        # Linux then doubles the file's read-ahead window (length 0: to the end of the file)
        length = 0 if end is None else end - start
        with contextlib.suppress(OSError, AttributeError):
            os.posix_fadvise(self._fd, start, length, os.POSIX_FADV_SEQUENTIAL)

    def __iter__(self) -> Iterator[bytes]:
        while self._end is None or self._position < self._end:
            if self._fd < 0:
                raise ValueError("read from a closed reader")
            wanted = self._chunk
            if self._end is not None:
                wanted = min(wanted, self._end - self._position)
            with _Mapped("read upload data"):
                data = os.pread(self._fd, wanted, self._position)
            if not data:  # the stored end: a range past it stops there, as a slice does
                return
            self._position += len(data)
            yield data

    def close(self) -> None:
        # -1 first: a closed descriptor's number is soon reused by another file
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


class FileStore(Store):
    """Data files in a flat directory."""

    kind = "filestore"
    can_concat = True

    def __init__(self, directory: Path):
        self.directory = directory.resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._capacity = file_system_size(self.directory)

    def local_path(self, upload_id: str) -> Path:
        """The data file; the id is checked again, so no path can leave the directory."""
        if not is_valid_upload_id(upload_id):
            raise ValueError(f"invalid upload id {upload_id!r}")
        return self.directory / upload_id

    def create(self, upload_id: str) -> None:
        """The empty data file; AlreadyExists if the name is taken (by a racing creation)."""
        path = self.local_path(upload_id)
        with _Mapped("create upload data", creating=True):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))

    def writer(
        self, info: UploadInfo, parts: Sequence[Part] = (), reserve: Reserve | None = None
    ) -> FileWriter:
        del parts, reserve  # one file: no parts
        return FileWriter(self.local_path(info.id), info.offset)

    def reader(
        self, upload_id: str, start: int = 0, end: int | None = None, chunk: int = READ_CHUNK
    ) -> FileReader:
        return FileReader(self.local_path(upload_id), start, end, chunk)

    def remove(self, upload_id: str) -> None:
        path = self.local_path(upload_id)
        with _Mapped("remove upload data"):
            path.unlink(missing_ok=True)

    def size(self, upload_id: str) -> int:
        path = self.local_path(upload_id)
        try:
            with _Mapped("read the size of upload data", missing=True):
                return path.stat().st_size
        except FileNotFoundError:
            return 0

    def max_object_size(self) -> int | None:
        """The total size of the file system holding the directory (read once, at start): no
        file can outgrow it, however much space is freed later."""
        return self._capacity

    def free_space(self) -> int:
        """Bytes available to this (unprivileged) process on the directory's file system; 0
        when it cannot be read, so nothing is accepted that might not fit."""
        try:
            stat = os.statvfs(self.directory)
        except OSError:
            return 0
        return stat.f_bavail * stat.f_frsize

    def check(self) -> None:
        """A new file can be created and written in the directory (a read-only remount or a
        full inode table fails here, not on the next upload); raises the OSError."""
        # the dot keeps the probe from ever looking like an upload's data file
        probe = self.directory / f".health-{secrets.token_hex(6)}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)

    def concat(self, final: UploadInfo, sources: Sequence[UploadInfo]) -> None:
        """FileNotFoundError if a source (or the final's own file) is gone."""
        paths = [self.local_path(source.id) for source in sources]
        with (
            _Mapped("join uploads", missing=True),
            open(self.local_path(final.id), "r+b") as out,
        ):
            out.truncate(0)  # an assembly a crash cut short starts again from scratch
            for path in paths:
                with open(path, "rb") as src:
                    _copy(src.fileno(), out.fileno())
            out.flush()
            os.fdatasync(out.fileno())


def _copy(src: int, dst: int) -> None:
    """Kernel-side copy (copy_file_range), falling back to bounded read/write."""
    try:
        while os.copy_file_range(src, dst, _COPY_CHUNK):
            pass
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    while chunk := os.read(src, 1024 * 1024):
        os.write(dst, chunk)


def file_system_size(directory: Path) -> int | None:
    """Total bytes of the file system holding `directory` (None if it cannot be read)."""
    try:
        stat = os.statvfs(directory)
    except OSError:
        return None
    return stat.f_blocks * stat.f_frsize
