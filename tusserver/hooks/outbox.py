"""Durable hook deliveries (post-finish, and any event with `durable=True`).

Each delivery is a row in the registry's `hook_deliveries` table, written before the request
that caused it answers. The row is leased by one process while it is being delivered; on
failure it is rescheduled with exponential backoff until it succeeds or --hooks-max-attempts
attempts failed. A background sweep picks up due rows, in any worker; at start-up it takes
every pending row at once (a restart is a good reason to try again).

Crash safety: the lease carries the owner's token, and each process keeps a flock on
`<upload-dir>/.locks/hooks-<token>.owner` while it lives. The kernel drops the flock when the
process dies (even on SIGKILL), so another process finds the lock free and takes the dead
owner's leases over at once instead of waiting for them to run out.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from tusserver.hooks import metrics
from tusserver.hooks.model import HookFailed, HookRequest
from tusserver.registry import Registry

if TYPE_CHECKING:
    from tusserver.hooks.dispatch import Target

log = logging.getLogger("tusserver.hooks")

MAX_RETRY_DELAY = 3600.0
SETTLED_ROWS_KEPT = 7 * 86400.0


class OwnerLock:
    """This process's liveness token: an flocked file that vanishes with the process."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.token = secrets.token_hex(8)
        self._fd: int | None = None

    def path(self, token: str) -> Path:
        return self.directory / f"hooks-{token}.owner"

    def hold(self) -> str:
        """Create and flock our file (once; idempotent); returns our token."""
        if self._fd is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            final = self.path(self.token)
            staging = final.with_suffix(".tmp")  # locked before it is visible: never "dead"
            fd = os.open(staging, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.replace(staging, final)
            self._fd = fd
            for other in self.directory.glob("hooks-*.owner"):  # leftovers of crashed runs
                token = other.name.removeprefix("hooks-").removesuffix(".owner")
                if token != self.token:
                    self.is_dead(token)
        return self.token

    def release(self) -> None:
        """Clean shutdown: our leases were settled; drop the file and the lock."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                self.path(self.token).unlink()
            os.close(fd)

    def is_dead(self, token: str) -> bool:
        """Whether the process behind a token is gone (its lock is free, or its file missing).

        A dead owner's file is removed on the way.
        """
        if not token or token == self.token or not token.isalnum():
            return False
        path = self.path(token)
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        return True


class Outbox:
    """Records, delivers and retries durable deliveries for one process."""

    def __init__(
        self,
        registry: Registry,
        owner_dir: Path,
        *,
        max_attempts: int,
        retry_delay: float,
        call: Callable[[Target, HookRequest], Coroutine[Any, Any, Any]],
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
        targets: Callable[[], dict[str, Target]],
    ):
        self.registry = registry
        self.owner = OwnerLock(owner_dir)
        self.max_attempts = max(1, max_attempts)
        self.retry_delay = max(0.01, retry_delay)
        self._call = call
        self._spawn = spawn
        self._targets = targets  # "event/target-name" -> Target, for every durable event

    def record(self, event: str, request: HookRequest, targets: list[Target]) -> None:
        """Write one delivery per receiver, leased by us, then deliver in the background."""
        now = time.time()
        payload = request.dumps()
        owner = self.owner.hold()
        rows = [
            {
                "event": event,
                "target": target.name,
                "upload_id": request.event.upload.id,
                "payload": payload,
                "state": "pending",
                "attempts": 1,
                "next_attempt": now,
                "lease_until": now + target.lease,
                "owner": owner,
                "created": now,
                "updated": now,
            }
            for target in targets
        ]
        ids = self.registry.add_deliveries(rows)
        for delivery_id, target in zip(ids, targets, strict=True):
            self._spawn(self.deliver(delivery_id, target, request, attempt=1))

    async def deliver(
        self, delivery_id: int, target: Target, request: HookRequest, attempt: int
    ) -> None:
        """One attempt; the row is settled whatever happens (even on shutdown cancellation)."""
        try:
            await self._call(target, request)
        except HookFailed as exc:
            self._failed(delivery_id, target, request, attempt, str(exc))
            return
        except BaseException:
            # shutdown: release the lease so the next start retries at once
            self.registry.settle_delivery(delivery_id, "pending", next_attempt=time.time())
            raise
        self.registry.settle_delivery(delivery_id, "done")
        metrics.DELIVERIES.labels(request.type, target.kind, "delivered").inc()
        if attempt > 1:
            log.info(
                "%s hook (%s) for upload %s delivered on attempt %d",
                request.type,
                target.name,
                request.event.upload.id,
                attempt,
            )

    def _failed(
        self, delivery_id: int, target: Target, request: HookRequest, attempt: int, error: str
    ) -> None:
        upload_id = request.event.upload.id
        if attempt >= self.max_attempts:
            self.registry.settle_delivery(delivery_id, "failed", error=error)
            metrics.DELIVERIES.labels(request.type, target.kind, "gave_up").inc()
            log.error(
                "%s hook (%s) for upload %s gave up after %d attempts: %s",
                request.type,
                target.name,
                upload_id,
                attempt,
                error,
            )
            return
        delay = min(self.retry_delay * 2 ** (attempt - 1), MAX_RETRY_DELAY)
        self.registry.settle_delivery(
            delivery_id, "pending", next_attempt=time.time() + delay, error=error
        )
        metrics.DELIVERIES.labels(request.type, target.kind, "retried").inc()
        log.warning(
            "%s hook (%s) for upload %s failed (attempt %d of %d), retrying in %.1fs",
            request.type,
            target.name,
            upload_id,
            attempt,
            self.max_attempts,
            delay,
        )

    def retry_once(self, *, everything_due: bool = False) -> int:
        """Claim and start due deliveries; `everything_due` ignores backoff (used at start)."""
        targets = self._targets()
        if not targets:
            return 0
        started = 0
        now = time.time()
        owner = self.owner.hold()
        dead = [o for o in self.registry.delivery_owners(now) if self.owner.is_dead(o)]
        for row in self.registry.due_deliveries(
            now, ignore_schedule=everything_due, dead_owners=dead
        ):
            target = targets.get(f"{row['event']}/{row['target']}")
            if target is None:
                continue  # its receiver is not configured in this process (yet)
            claimed = self.registry.claim_delivery(
                row["id"], now, target.lease, owner=owner, dead_owners=dead
            )
            if claimed is None:
                continue  # another worker got it
            request = HookRequest.loads(claimed["payload"])
            self._spawn(self.deliver(claimed["id"], target, request, claimed["attempts"]))
            started += 1
        return started

    def release(self) -> None:
        """Clean shutdown: give up our liveness lock (leases were settled by then)."""
        self.owner.release()

    async def retry_forever(self) -> None:
        """Background task: pick up failed and orphaned deliveries, prune settled ones."""
        poll = min(1.0, max(0.05, self.retry_delay / 2))
        first = True
        last_prune = 0.0
        while True:
            try:
                self.retry_once(everything_due=first)
                first = False
                if time.time() - last_prune > 3600:
                    last_prune = time.time()
                    self.registry.prune_deliveries(last_prune - SETTLED_ROWS_KEPT)
            except Exception:
                log.exception("hook delivery retry sweep failed")
            await anyio.sleep(poll)
