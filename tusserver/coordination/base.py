"""Coordination between requests, worker processes and instances: one lock abstraction and
one liveness abstraction. Every implementation passes tests/contract/test_coordination.py.

Locks: one writer per upload. A request that finds the upload locked asks the holder to let
go (a *release request*: the holder's `on_release_request` callback runs in the holder's event
loop), then waits up to its timeout. The holder stops reading its body, saves what it has and
leaves the block, so a client that resumes after a dropped connection is not locked out by
the request the server has not yet noticed is dead (tusd v2 does the same). If the backend
itself loses a lock (a dropped database connection), every holder gets a release request too.

Liveness: each process is an *owner* identified by a token while it lives. Job and hook
delivery leases name their owner; `dead()` tells which owners are known to be gone (killed,
crashed, their connection dropped) so their leases are taken over at once instead of when they
lapse. Leases themselves (expiry by the registry's clock, the attempt number as fencing
token) live in the registry beside the rows they protect.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path

ReleaseRequest = Callable[[], None]


class Locker(ABC):
    """Per-upload exclusive locks with release requests."""

    @abstractmethod
    async def start(self) -> None:
        """Connect (needs the running event loop of the process that will use the locks)."""

    @abstractmethod
    async def close(self) -> None:
        """Drop every connection (held locks are released by the backend)."""

    @abstractmethod
    def hold(
        self,
        upload_id: str,
        timeout: float,
        on_release_request: ReleaseRequest | None = None,
    ) -> AbstractAsyncContextManager[None]:
        """Hold the upload's lock for the block.

        If it is held elsewhere, a release request is sent to the holder and the lock is
        waited for up to `timeout` seconds; then `TusError(423)`. With `timeout <= 0` no
        release request is sent (a background sweep never interrupts an upload). Raises
        `BackendUnavailable` when the backend cannot be reached.
        """

    def check(self) -> None:
        """Raise BackendUnavailable while locks cannot be taken (a lost database connection
        that is being re-established): the readiness probe's question. Local locks: never."""
        return None

    def created(self, upload_id: str, local_path: Path | None) -> None:
        """A new upload exists (called on a worker thread): a chance to prepare its lock
        cheaply (the local locker links its lock file to the data file). Optional."""
        del upload_id, local_path

    async def forget(self, upload_id: str) -> None:
        """The upload is gone: drop what the locker keeps for it (lock files). Optional."""
        del upload_id


class Liveness(ABC):
    """This process's owner token, and which other owners are gone."""

    token: str

    @abstractmethod
    async def start(self) -> None:
        """Announce this owner as alive (idempotent)."""

    @abstractmethod
    async def stop(self) -> None:
        """Clean shutdown: this owner's leases were settled; stop announcing it."""

    @abstractmethod
    async def dead(self, owners: Sequence[str]) -> list[str]:
        """The owners among `owners` known to be gone (never this process's own token; an
        owner this backend cannot judge is not reported dead: its leases lapse instead)."""
