"""File store: one data file per upload, named by its id, inside the upload directory.

Ids are validated by the protocol layer before they get here and checked again below, so a
path can never leave the directory. Writes use writev on a raw fd: no Python-level buffer
copies, and `sync` is an fdatasync so offsets recorded afterwards never run ahead of the data.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Sequence
from pathlib import Path

from tusserver.protocol import is_valid_upload_id
from tusserver.storage.base import Store, StoreFull, Writer

_COPY_CHUNK = 8 * 1024 * 1024
# Start the disk write of every this many appended bytes at once (asynchronously), so the
# fdatasync before each acknowledgement only waits for the last piece: a PATCH of 8 MiB then
# overlaps its disk writes with its network transfer instead of paying for them at the end.
WRITEBACK_BYTES = 1024 * 1024


class FileWriter(Writer):
    """Appends with writev at the end of the data file."""

    def __init__(self, path: Path, offset: int):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.ftruncate(self.fd, offset)
            os.lseek(self.fd, offset, os.SEEK_SET)
        except BaseException:
            os.close(self.fd)
            raise
        self._position = self._flushed = offset

    def write(self, pieces: Sequence[bytes]) -> int:
        total = sum(len(p) for p in pieces)
        done = 0
        views = [memoryview(p) for p in pieces if p]
        while done < total:
            try:
                n = os.writev(self.fd, views)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise StoreFull(exc.errno, "no space left for upload data") from exc
                raise
            done += n
            views = _advance(views, n)
        self._position += total
        if self._position - self._flushed >= WRITEBACK_BYTES:
            _start_writeback(self.fd, self._flushed, self._position - self._flushed)
            self._flushed = self._position
        return total

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)
        os.lseek(self.fd, size, os.SEEK_SET)
        self._position = self._flushed = size

    def close(self) -> None:
        os.close(self.fd)


def _start_writeback(fd: int, start: int, length: int) -> None:
    """Ask the kernel to start writing a range to disk now, without waiting (Linux: fadvise
    DONTNEED starts writeback of dirty pages, then drops the clean ones from the cache)."""
    with contextlib.suppress(OSError, AttributeError):
        os.posix_fadvise(fd, start, length, os.POSIX_FADV_DONTNEED)


def _advance(views: list[memoryview], n: int) -> list[memoryview]:
    """Drop the first n bytes from a list of views (after a short writev)."""
    while views and n >= len(views[0]):
        n -= len(views[0])
        views = views[1:]
    if views and n:
        views = [views[0][n:], *views[1:]]
    return views


class FileStore(Store):
    """Data files in a flat directory."""

    kind = "filestore"

    def __init__(self, directory: Path):
        self.directory = directory.resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._capacity = file_system_size(self.directory)

    def path(self, upload_id: str) -> Path:
        if not is_valid_upload_id(upload_id):
            raise ValueError(f"invalid upload id {upload_id!r}")
        return self.directory / upload_id

    def create(self, upload_id: str) -> None:
        fd = os.open(self.path(upload_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)

    def writer(self, upload_id: str, offset: int) -> FileWriter:
        return FileWriter(self.path(upload_id), offset)

    def remove(self, upload_id: str) -> None:
        self.path(upload_id).unlink(missing_ok=True)

    def size(self, upload_id: str) -> int:
        try:
            return self.path(upload_id).stat().st_size
        except FileNotFoundError:
            return 0

    def max_object_size(self) -> int | None:
        """The total size of the file system holding the directory (read once, at start): no
        file can outgrow it, however much space is freed later."""
        return self._capacity

    def concat(self, upload_id: str, sources: Sequence[str]) -> None:
        with open(self.path(upload_id), "wb") as out:
            for source in sources:
                with open(self.path(source), "rb") as src:
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
