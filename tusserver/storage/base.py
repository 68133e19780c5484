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
after the last byte), `keeps_parts` (the store keeps an upload as numbered parts whose
list lives in the registry, recorded together with each offset: S3), `local_path` (a file
the locker may link to; hooks get it as `Storage.Path`).

A store that keeps parts gets the upload's recorded parts and a way to reserve part numbers
(`reserve`, a blocking call into the registry) when a writer opens; the writer reports the
parts behind each durable offset (`progress`), the core records them with that offset in one
compare-and-set, then tells the writer (`committed`). Part numbers come only from `reserve`,
so a stale writer that lost the upload's lock can never overwrite a part a newer writer
recorded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tusserver.errors import StoreFull
from tusserver.registry.base import Part, UploadInfo

__all__ = ["Progress", "Reader", "Reserve", "Store", "StoreFull", "Writer"]

# Reserves the upload's next part number in the registry (blocking; never from the event loop).
Reserve = Callable[[], int]


@dataclass(frozen=True)
class Progress:
    """Store state to record together with a durable offset (stores that keep parts)."""

    ref: str | None = None  # the store's handle (an S3 multipart upload id), if it has one
    parts: tuple[Part, ...] = ()  # parts not recorded yet, all ending at or before the offset

    def __bool__(self) -> bool:
        return self.ref is not None or bool(self.parts)


NO_PROGRESS = Progress()

READ_CHUNK = 1024 * 1024


class Writer(ABC):
    """Appends one request's bytes to an upload, starting at the offset it was opened at."""

    # write() may run on the event loop's thread (small remainders of a body). A writer whose
    # writes can wait for `reserve` (which needs the event loop) says False.
    inline_writes: bool = True
    # Why sync or checkpoint reported less than was written (a remote store failed part-way):
    # the core records what is durable, then answers with this (503 or 507).
    failure: Exception | None = None

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

    def checkpoint(self, limit: int) -> int:
        """The largest offset up to `limit` (what was written when the checkpoint began)
        that is durable and can be recorded now, during a body (once a second): cheaper than
        sync where the store can say that without forcing it (S3: the completed parts that
        end by `limit`; an offset inside a part would name a tail object that does not
        exist)."""
        return min(limit, self.sync())

    def progress(self, offset: int) -> Progress:
        """What to record with `offset` (a value sync or checkpoint returned): the parts
        behind it that were not committed yet, and the store's handle."""
        del offset
        return NO_PROGRESS

    def committed(self, offset: int) -> None:
        """The registry recorded `offset` with its progress: what it superseded may go (an
        S3 tail object). Must not block (called on the event loop)."""
        del offset

    @abstractmethod
    def discard_after(self, offset: int) -> None:
        """Forget everything past `offset`, the last recorded offset (a rejected chunk); the
        writer continues there. `offset` is never below the offset the writer was opened at."""

    @abstractmethod
    def close(self) -> None:
        """Release the writer's resources (after sync, or to abandon unsynced bytes). Must not
        block on the network (called on the event loop)."""


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
    keeps_parts: bool = False  # writers need the recorded parts and `reserve`
    # create() makes the upload's data and refuses a taken id (AlreadyExists), so what it
    # made is the request's own to undo. A store whose create makes nothing (S3) leaves a
    # taken id to the registry, and nothing of it may be removed then.
    creates_data: bool = True

    @abstractmethod
    def create(self, upload_id: str) -> None:
        """Make an empty upload; `AlreadyExists` if the upload exists already (two creations
        racing for one id chosen by a hook: the second one gets 409). See `creates_data`."""

    @abstractmethod
    def writer(
        self, info: UploadInfo, parts: Sequence[Part] = (), reserve: Reserve | None = None
    ) -> Writer:
        """A writer positioned at `info.offset` (the recorded offset); anything stored past it
        is discarded (bytes of a request that never got recorded). `parts` and `reserve`:
        see the module docstring (stores that keep parts). Cheap: no network round trip.

        FileNotFoundError if the offset is > 0 and the upload's bytes are gone (it was removed
        while a writer that lost its lock went on): a store never makes up the bytes before
        the offset (a remote store may only find out when it first writes or syncs)."""

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

    def finish(self, info: UploadInfo, parts: Sequence[Part]) -> None:
        """The last byte was recorded: assemble the upload if the store needs to (S3), from
        the recorded `parts`. Idempotent: called again after a crash or an outage, also
        with no parts once they were assembled and dropped."""
        del info, parts

    def concat(self, final: UploadInfo, sources: Sequence[UploadInfo]) -> None:
        """Fill the final upload with the finished sources' bytes, in order, without
        buffering them (only called when `can_concat`)."""
        raise NotImplementedError(f"{self.kind} cannot concatenate uploads")

    def strays(self, older_than: float) -> list[tuple[str, str]]:
        """Unfinished store-side uploads started more than `older_than` seconds ago, as
        (upload id, store handle) pairs: the orphan sweep aborts those the registry does not
        know as active (S3: open multipart uploads under the prefix). Ids may be anything
        found under the store's prefix."""
        del older_than
        return []

    def abort(self, upload_id: str, ref: str) -> None:
        """Abort one stray store-side upload (see `strays`)."""
        del upload_id, ref

    def close(self) -> None:
        """Release what the store holds (threads, connections) when the server stops."""
        return None

    def download_url(self, upload_id: str) -> str | None:
        """A short-lived URL a client may fetch the finished upload from directly (S3
        presigned downloads), or None to stream it through the server."""
        del upload_id
        return None

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


def advance(views: list[memoryview], n: int) -> list[memoryview]:
    """Drop the first n bytes from a list of views (after a short writev: stores
    that write with os.writev)."""
    while views and n >= len(views[0]):
        n -= len(views[0])
        views = views[1:]
    if views and n:
        views = [views[0][n:], *views[1:]]
    return views
