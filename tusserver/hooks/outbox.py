"""Durable hook deliveries (post-finish, and any event with `durable=True`).

Each delivery is recorded in the registry before the request that caused it answers, already
leased by this process for its first attempt. On failure it is rescheduled with exponential
backoff until it succeeds or --hooks-max-attempts attempts failed. A background sweep in every
worker of every instance picks up due deliveries; at start-up it takes every pending one at
once (a restart is a good reason to try again). At-least-once: a receiver may see an attempt
twice (a crash after it answered), never zero times.

Crash safety: a lease names its owner (`Liveness.token`) and runs for the target's lease
duration on the registry's clock. Another process takes a delivery over when the lease lapsed,
or at once when liveness says the owner is dead (SIGKILL, crash, dropped connection). Every
claim increments the attempt number, which fences the settle: an owner that stalled past its
lease and lost the delivery to another attempt changes nothing when it finally settles.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import anyio

from tusserver.coordination import Liveness
from tusserver.errors import BackendUnavailable
from tusserver.hooks import metrics
from tusserver.hooks.model import HookFailed, HookRequest
from tusserver.registry import NewDelivery, Registry
from tusserver.registry.base import DONE, FAILED, PENDING

if TYPE_CHECKING:
    from tusserver.hooks.dispatch import Target

log = logging.getLogger("tusserver.hooks")

MAX_RETRY_DELAY = 3600.0
SETTLED_KEPT = 7 * 86400.0  # seconds settled deliveries stay visible
PRUNE_EVERY = 3600.0


class Outbox:
    """Records, delivers and retries durable deliveries for one process."""

    def __init__(
        self,
        registry: Registry,
        liveness: Liveness,
        *,
        max_attempts: int,
        retry_delay: float,
        call: Callable[[Target, HookRequest], Coroutine[Any, Any, Any]],
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
        targets: Callable[[], dict[str, Target]],
    ):
        self.registry = registry
        self.liveness = liveness
        self.max_attempts = max(1, max_attempts)
        self.retry_delay = max(0.01, retry_delay)
        self._call = call
        self._spawn = spawn
        self._targets = targets  # "event/target-name" -> Target, for every durable event

    async def record(self, event: str, request: HookRequest, targets: list[Target]) -> None:
        """Write one delivery per receiver, leased by us, then deliver in the background.

        One write for all receivers, so either every one is recorded or none is (and the
        request fails); it takes the longest lease of them.
        """
        payload = request.dumps()
        upload_id = request.event.upload.id
        ids = await self.registry.add_deliveries(
            [NewDelivery(event, target.name, upload_id, payload) for target in targets],
            self.liveness.token,
            max(target.lease for target in targets),
        )
        for delivery_id, target in zip(ids, targets, strict=True):
            self._spawn(self.deliver(delivery_id, target, request, attempt=1))

    async def deliver(
        self, delivery_id: int, target: Target, request: HookRequest, attempt: int
    ) -> None:
        """One attempt; it is settled whatever happens (even on shutdown cancellation)."""
        try:
            await self._call(target, request)
        except HookFailed as exc:
            await self._failed(delivery_id, target, request, attempt, str(exc))
            return
        except BaseException:
            # shutdown: release the lease so the next start (or another instance) retries now;
            # with the registry unreachable the lease lapses instead
            with anyio.CancelScope(shield=True), contextlib.suppress(BackendUnavailable):
                await self.registry.settle_delivery(delivery_id, attempt, PENDING, retry_in=0)
            raise
        if not await self.registry.settle_delivery(delivery_id, attempt, DONE):
            self._taken_over(request, target, attempt)
            return
        metrics.DELIVERIES.labels(request.type, target.kind, "delivered").inc()
        if attempt > 1:
            log.info(
                "%s hook (%s) for upload %s delivered on attempt %d",
                request.type,
                target.name,
                request.event.upload.id,
                attempt,
            )

    async def _failed(
        self, delivery_id: int, target: Target, request: HookRequest, attempt: int, error: str
    ) -> None:
        upload_id = request.event.upload.id
        if attempt >= self.max_attempts:
            if not await self.registry.settle_delivery(delivery_id, attempt, FAILED, error=error):
                self._taken_over(request, target, attempt)
                return
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
        if not await self.registry.settle_delivery(
            delivery_id, attempt, PENDING, retry_in=delay, error=error
        ):
            self._taken_over(request, target, attempt)
            return
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

    def _taken_over(self, request: HookRequest, target: Target, attempt: int) -> None:
        """A settle was fenced off: our lease lapsed and a later attempt owns the delivery."""
        log.warning(
            "%s hook (%s) for upload %s: attempt %d outlived its lease; a later attempt decides",
            request.type,
            target.name,
            request.event.upload.id,
            attempt,
        )

    async def retry_once(self, *, everything_due: bool = False) -> int:
        """Claim and start due deliveries; `everything_due` ignores backoff (used at start)."""
        targets = self._targets()
        if not targets:
            return 0
        dead = await self.liveness.dead(await self.registry.delivery_owners())
        started = 0
        due = await self.registry.due_deliveries(dead_owners=dead, everything=everything_due)
        for delivery in due:
            target = targets.get(f"{delivery.event}/{delivery.target}")
            if target is None:
                continue  # its receiver is not configured in this process (yet)
            claimed = await self.registry.claim_delivery(
                delivery.id, self.liveness.token, target.lease, dead_owners=dead
            )
            if claimed is None:
                continue  # another worker or instance got it
            request = HookRequest.loads(claimed.payload)
            self._spawn(self.deliver(claimed.id, target, request, claimed.attempts))
            started += 1
        return started

    async def retry_forever(self) -> None:
        """Background task: pick up failed and orphaned deliveries, prune settled ones."""
        poll = min(1.0, max(0.05, self.retry_delay / 2))
        first = True
        next_prune = 0.0
        unreachable = False  # an outage is logged once, not on every poll
        while True:
            try:
                await self.retry_once(everything_due=first)
                first = False
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_EVERY
                    await self.registry.prune_deliveries(SETTLED_KEPT)
                unreachable = False
            except BackendUnavailable as exc:
                if not unreachable:
                    log.warning("hook delivery retry sweep paused: %s", exc)
                unreachable = True
            except Exception:
                log.exception("hook delivery retry sweep failed")
            await anyio.sleep(poll)
