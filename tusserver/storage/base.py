"""The store interface: where upload bytes live. Upload info lives in the registry instead.

Failures are the server's exceptions, never a driver's or the OS's: no room is `StoreFull`
(507), a backend that cannot be used right now `BackendUnavailable` (503 + Retry-After), and
`FileNotFoundError` only where a method says so (reading or writing a removed upload).

A store only moves bytes. It never decides offsets: the core asks the writer to make the data
durable (`sync`, which says how far that reached) and only then records the offset in the
registry. Everything here is blocking and is called on worker threads (or, for the cheap
calls of a local file store, inline); every implementation passes
tests/contract/test_store.py.

Optional capabilities decide what the server advertises and how it works, never an
`isinstance` check: `can_concat` (the concatenation extension), `needs_finish` (assembly
after the last byte), `local_path` (a file the locker may link to; hooks get it as
`Storage.Path`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path

from tusserver.errors import StoreFull

__all__ = ["Reader", "Store", "StoreFull", "Writer"]

READ_CHUNK = 1024 * 1024


class Writer(ABC):
    """Appends one request's bytes to an upload, starting at the offset it was opened at."""

    @abstractmethod
    def write(self, pieces: Sequence[bytes]) -> int:
        """Append the pieces in order; returns the number of bytes taken (all of them)."""

    @abstractmethod
    def sync(self) -> int:
        """Make written bytes durable; returns the upload's offset that is now durable.

        A file store makes everything durable (the offset it was opened at plus all bytes
        written). A store that keeps whole parts (S3) may report less: the caller records
        exactly what this returns, and the client resends the rest.
        """

    @abstractmethod
    def discard_after(self, offset: int) -> None:
        """Forget everything past `offset` (a rejected chunk); the writer continues there.
        `offset` is never below the offset the writer was opened at."""

    @abstractmethod
    def close(self) -> None:
        """Release the writer's resources (after sync, or to abandon unsynced bytes)."""


class Reader(ABC):
    """A byte range of an upload, read in order, in bounded chunks."""

    @abstractmethod
    def __iter__(self) -> Iterator[bytes]:
        """Chunks of at most `chunk` bytes until the range is exhausted."""

    @abstractmethod
    def close(self) -> None:
        """Release the reader's resources (also when not read to the end)."""

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Store(ABC):
    """One storage backend."""

    kind: str = "store"
    # capabilities (see the module docstring)
    can_concat: bool = False
    needs_finish: bool = False  # finish() does work (else the core skips the thread hop)

    @abstractmethod
    def create(self, upload_id: str) -> None:
        """Make an empty upload; `AlreadyExists` if the upload exists already (two creations
        racing for one id chosen by a hook: the second one gets 409)."""

    @abstractmethod
    def writer(self, upload_id: str, offset: int) -> Writer:
        """A writer positioned at `offset` (the recorded offset); anything stored past it is
        discarded first (bytes of a request that never got recorded).

        FileNotFoundError if `offset` > 0 and the upload's bytes are gone (it was removed
        while a writer that lost its lock went on): a store never makes up the bytes before
        `offset`."""

    @abstractmethod
    def reader(
        self, upload_id: str, start: int = 0, end: int | None = None, chunk: int = READ_CHUNK
    ) -> Reader:
        """Bytes `start` up to (not including) `end` (default: the end), streamed;
        FileNotFoundError for a missing upload."""

    @abstractmethod
    def remove(self, upload_id: str) -> None:
        """Delete the upload's bytes; removing a missing upload is not an error."""

    @abstractmethod
    def size(self, upload_id: str) -> int:
        """Bytes currently stored (0 for a missing upload)."""

    def finish(self, upload_id: str) -> None:
        """The last byte was recorded: assemble the upload if the store needs to (S3)."""
        del upload_id

    def concat(self, upload_id: str, sources: Sequence[str]) -> None:
        """Fill `upload_id` with the finished sources' bytes, in order, without buffering
        them (only called when `can_concat`)."""
        raise NotImplementedError(f"{self.kind} cannot concatenate uploads")

    def local_path(self, upload_id: str) -> Path | None:
        """A local file holding the upload's bytes, if the store has one."""
        del upload_id
        return None

    def max_object_size(self) -> int | None:
        """The largest upload this backend could ever hold, or None when it has no such limit.

        A length above it is refused with 413 at once: unlike a full disk (507), waiting and
        retrying cannot help, and tus clients do not retry 4xx answers. (An S3 store: 5 TiB.)
        """
        return None

    def free_space(self) -> int | None:
        """Bytes that can still be stored, or None when the backend has no such figure."""
        return None

    def check(self) -> None:
        """Raise if the store cannot take uploads right now (health check)."""
        return None

    def storage_info(self, upload_id: str) -> dict[str, str]:
        """The `Storage` object of tusd's hook payload."""
        path = self.local_path(upload_id)
        return {"Type": self.kind, **({"Path": str(path)} if path is not None else {})}
