"""The store interface: where upload bytes live. Upload info lives in the registry instead.

A store only moves bytes. It never decides offsets: the handler asks the writer to make the
data durable (`sync`) and only then records the new offset in the registry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path


class StoreFull(OSError):
    """The backend has no room for more bytes (ENOSPC or the configured reserve)."""


class Writer(ABC):
    """Appends one request's bytes to an upload, starting at the offset it was opened at."""

    @abstractmethod
    def write(self, pieces: Sequence[bytes]) -> int:
        """Append the pieces in order; returns the number of bytes written."""

    @abstractmethod
    def sync(self) -> None:
        """Make everything written so far durable (called before the offset is recorded)."""

    @abstractmethod
    def truncate(self, size: int) -> None:
        """Cut the upload back to `size` bytes (used to discard a rejected chunk)."""

    @abstractmethod
    def close(self) -> None:
        """Release the writer's resources."""


class Store(ABC):
    """One storage backend."""

    kind: str = "store"

    @abstractmethod
    def create(self, upload_id: str) -> None:
        """Make an empty upload."""

    @abstractmethod
    def writer(self, upload_id: str, offset: int) -> Writer:
        """A writer positioned at `offset`; anything stored past it is discarded first."""

    @abstractmethod
    def remove(self, upload_id: str) -> None:
        """Delete the upload's bytes; removing a missing upload is not an error."""

    @abstractmethod
    def size(self, upload_id: str) -> int:
        """Bytes currently stored."""

    @abstractmethod
    def path(self, upload_id: str) -> Path:
        """Local file holding the bytes (for downloads, hooks and processing plugins)."""

    @abstractmethod
    def concat(self, upload_id: str, sources: Sequence[str]) -> None:
        """Fill `upload_id` with the sources' bytes, in order, without buffering them."""

    def max_object_size(self) -> int | None:
        """The largest upload this backend could ever hold, or None when it has no such limit.

        A length above it is refused with 413 at once: unlike a full disk (507), waiting and
        retrying cannot help, and tus clients do not retry 4xx answers. (An S3 store: 5 TiB.)
        """
        return None

    def storage_info(self, upload_id: str) -> dict[str, str]:
        """The `Storage` object of tusd's hook payload."""
        return {"Type": self.kind, "Path": str(self.path(upload_id))}
