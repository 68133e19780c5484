"""The registry interface: what the server knows about uploads, hook deliveries and jobs.

Every implementation (SQLite for one host, PostgreSQL for many) passes the same contract suite
(tests/contract/test_registry.py). Callers get typed records, never rows. All methods are
coroutines, so a network database never blocks the event loop; an embedded one may simply
run inline. A backend that cannot be reached raises `tusserver.errors.BackendUnavailable`.

Times: upload expiry is wall-clock time chosen by the server (it is sent to clients as
`Upload-Expires`). Leases of jobs and deliveries are durations: the implementation adds them
to its own clock (the database's, for a shared one), so instances with skewed clocks agree on
when a lease ran out. The attempt number of a claim is its fencing token: every write of the
claimant names it, and a write from an owner that lost the claim (its lease lapsed and another
instance claimed again) changes nothing and returns False. A lease of 0 has already lapsed.

Before `open()` and after `close()` every call raises BackendUnavailable, as when the database
is down. Callers never see a driver's exception type.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

ACTIVE = "active"
COMPLETE = "complete"
TERMINATED = "terminated"
EXPIRED = "expired"
GONE_STATES = (TERMINATED, EXPIRED)

# How long tombstones of terminated/expired uploads are kept so their URLs answer 410.
TOMBSTONE_SECONDS = 7 * 86400

# Delivery states
PENDING = "pending"
DONE = "done"
FAILED = "failed"

# Job states
QUEUED = "queued"
PROCESSING = "processing"
COMPLETED = "completed"
JOB_FAILED = "failed"


@dataclass
class UploadInfo:
    """What the server knows about one upload."""

    id: str
    length: int | None
    offset: int = 0
    metadata_raw: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    expires: float | None = None
    state: str = ACTIVE
    concat: str | None = None
    is_partial: bool = False
    is_final: bool = False
    partials: list[str] = field(default_factory=list)
    # the store's own handle for the upload (e.g. an S3 multipart upload id); None for stores
    # that need none
    store_ref: str | None = None

    @property
    def finished(self) -> bool:
        """All bytes received."""
        return self.length is not None and self.offset == self.length

    def expired_at(self, now: float) -> bool:
        """An unfinished upload past its Upload-Expires."""
        return self.expires is not None and not self.finished and self.expires <= now


@dataclass(frozen=True)
class Part:
    """One piece of an upload that a store keeps separately (an S3 part), in order."""

    number: int
    etag: str
    size: int
    checksum: str | None = None  # the part's integrity checksum as the store sent it, if any


@dataclass
class NewDelivery:
    """A hook delivery to record: one event for one receiver."""

    event: str
    target: str
    upload_id: str
    payload: str  # the JSON body, as sent


@dataclass
class Delivery:
    """A recorded hook delivery (see tusserver.hooks.outbox)."""

    id: int
    event: str
    target: str
    upload_id: str
    payload: str
    state: str  # pending, done, failed
    attempts: int  # claims so far; the current claim's fencing token
    owner: str | None  # liveness token of the process holding the lease
    last_error: str | None
    created: float
    updated: float


@dataclass
class Job:
    """A post-finish processing job (see tusserver.processing.jobs); one per upload."""

    id: str  # the upload id
    state: str  # queued, processing, completed, failed
    plugins: list[str]
    size: int
    owner: str | None
    attempts: int  # runs that ended by finishing or crashing (the crash-loop limit)
    run: int  # +1 on every claim, never refunded: the fencing token and the report's tag
    error_count: int
    bytes_done: int
    records: int
    progress: dict[str, Any] | None
    result: dict[str, Any] | None
    error: str | None
    created: float
    started: float | None
    finished: float | None
    updated: float


@dataclass(frozen=True)
class JobErrorRow:
    """One problem row of a job run's report, in report order (line, then seq)."""

    line: int
    seq: int
    plugin: str
    kind: str
    message: str
    excerpt: str


# (plugin, line, kind, message, excerpt): what a running job appends to its report
NewJobError = tuple[str, int, str, str, str]

# job_states value in `list_uploads` that matches uploads without a job row
NO_JOB = "none"


@dataclass(frozen=True)
class UploadFilter:
    """Which uploads `list_uploads` returns: every given condition must hold.

    `states`: upload states (ACTIVE, COMPLETE, TERMINATED, EXPIRED); `job_states`: job states
    (QUEUED, PROCESSING, COMPLETED, JOB_FAILED) or NO_JOB for uploads without a job. Empty
    means any."""

    states: tuple[str, ...] = ()
    job_states: tuple[str, ...] = ()


@dataclass(frozen=True)
class UploadStats:
    """Totals over every upload the registry knows (the admin dashboard's header)."""

    by_state: dict[str, int]  # upload state -> count (states without uploads left out)
    bytes_stored: int  # sum of the offsets of ACTIVE and COMPLETE uploads
    in_flight: int  # ACTIVE unfinished uploads whose offset moved since `active_since`
    jobs: dict[str, int]  # job state -> count (as job_counts)


class Registry(ABC):
    """Uploads, hook deliveries and processing jobs, shared by every worker and instance."""

    # -- lifecycle ---------------------------------------------------------------------------

    @abstractmethod
    async def open(self) -> None:
        """Connect and migrate the schema (idempotent; safe when instances start at once)."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections."""

    @abstractmethod
    async def ping(self) -> None:
        """One trivial query; raises BackendUnavailable if the database cannot answer."""

    # -- uploads -----------------------------------------------------------------------------

    @abstractmethod
    async def create(self, info: UploadInfo) -> None:
        """Record a new upload; `AlreadyExists` if the id is taken (or was, as a tombstone).

        An upload created complete (`state` COMPLETE: zero length) is recorded with its finish
        pending, in the same statement (see `pending_finishes`)."""

    @abstractmethod
    async def get(self, upload_id: str) -> UploadInfo | None:
        """The upload's info, or None if the id was never created (or was pruned)."""

    @abstractmethod
    async def set_offset(
        self,
        upload_id: str,
        *,
        expected: int,
        offset: int,
        expires: float | None,
        state: str,
        parts: Sequence[Part] = (),
        store_ref: str | None = None,
    ) -> bool:
        """Compare-and-set of the offset: applied only if the recorded offset is `expected` and
        the upload is still ACTIVE (not complete, terminated or expired).

        `parts` (new store parts behind the offset) and `store_ref` (when not None) are
        recorded in the same transaction, and only if the offset is: a store that keeps
        parts never has a part list that disagrees with the offset.

        False means nothing changed: another writer moved the offset, or the upload was
        completed, terminated or expired meanwhile (this writer lost its lock). A write from a
        writer that lost its lock can so never bring a removed upload back to life.

        Setting `state` to COMPLETE also records, in the same statement, that the upload's
        finish is pending (its post-finish hooks are not recorded yet): see `pending_finishes`.
        """

    @abstractmethod
    async def set_length(self, upload_id: str, length: int) -> bool:
        """Set a deferred length once, while the upload is ACTIVE; False (nothing changed) if a
        length was already recorded or the upload is no longer active."""

    @abstractmethod
    async def set_state(self, upload_id: str, state: str) -> None:
        """Set the state unconditionally (termination)."""

    @abstractmethod
    async def set_state_if(self, upload_id: str, expected: str, state: str) -> bool:
        """Compare-and-set of the state; True if this call made the change (one caller wins)."""

    @abstractmethod
    async def finals_waiting_for(self, partial_id: str) -> list[str]:
        """Unassembled final uploads that list `partial_id` (concatenation-unfinished)."""

    @abstractmethod
    async def expired_ids(self, now: float, limit: int = 1000) -> list[str]:
        """Active, unfinished uploads whose expiry has passed."""

    # The two methods of the pending-finish mark are not abstract only so that a registry
    # written before the mark keeps working (without the repair) until it implements them:
    # every registry of this package overrides both, and the contract suite checks them.

    async def finish_recorded(self, upload_id: str) -> None:
        """The finish of a complete upload was handled (its post-finish deliveries are
        recorded, or nothing wanted them): clear its pending mark. Idempotent."""
        del upload_id

    async def pending_finishes(self, older_than: float, limit: int = 100) -> list[str]:
        """Complete uploads whose finish is still pending (marked by `set_offset` or `create`
        when they completed, not cleared by `finish_recorded`) and whose `updated` time is
        more than `older_than` seconds ago by the registry's clock, oldest first, at most
        `limit`. The finish repair (upkeep.repair_finishes) finishes them again: a crash or
        an outage between recording the last byte and recording the post-finish deliveries
        never loses those. Uploads that completed before the mark existed (a migrated
        database) are never pending."""
        del older_than, limit
        return []

    @abstractmethod
    async def prune_tombstones(self, now: float) -> int:
        """Forget terminated/expired uploads older than TOMBSTONE_SECONDS (and their parts)."""

    # -- store parts (per-upload backend state of a store that keeps parts) -------------------

    @abstractmethod
    async def reserve_part(self, upload_id: str) -> int:
        """The upload's next part number (1, 2, 3, ...), never handed out twice for the same
        upload, whoever asks (any instance, a stale writer): parts are recorded later by
        `set_offset`, and recording a number again replaces the row (a retried write whose
        acknowledgement was lost). Numbers also advance for a removed or finished upload.

        KeyError if the upload id is unknown (never created, or pruned): a number for no
        upload is a caller's bug, and no counter exists to advance."""

    @abstractmethod
    async def parts(self, upload_id: str) -> list[Part]:
        """The upload's parts in number order."""

    @abstractmethod
    async def drop_parts(self, upload_id: str) -> None:
        """Forget the upload's parts (after it was assembled or removed)."""

    # -- durable hook deliveries -------------------------------------------------------------

    @abstractmethod
    async def add_deliveries(
        self, deliveries: Sequence[NewDelivery], owner: str, lease: float
    ) -> list[int]:
        """Record deliveries, already claimed by `owner` for `lease` seconds (attempts 1)."""

    @abstractmethod
    async def due_deliveries(
        self, *, dead_owners: Sequence[str] = (), everything: bool = False, limit: int = 100
    ) -> list[Delivery]:
        """Pending deliveries nobody holds (no lease, a lapsed one, or a dead owner's) whose
        retry time has come (with `everything`, also those still backing off)."""

    @abstractmethod
    async def claim_delivery(
        self, delivery_id: int, owner: str, lease: float, *, dead_owners: Sequence[str] = ()
    ) -> Delivery | None:
        """Take a pending delivery nobody holds for one attempt (attempts + 1), whatever its
        retry time (due_deliveries chose it); None if another caller won."""

    @abstractmethod
    async def settle_delivery(
        self,
        delivery_id: int,
        attempt: int,
        state: str,
        *,
        retry_in: float | None = None,
        error: str | None = None,
    ) -> bool:
        """End attempt `attempt`: done, failed (given up) or pending again (due `retry_in`
        seconds from now). False, changing nothing, if the delivery was claimed again since
        (fenced) or is already settled."""

    @abstractmethod
    async def delivery_owners(self) -> list[str]:
        """Owners holding unexpired leases on pending deliveries (to check their liveness)."""

    @abstractmethod
    async def has_delivery(self, upload_id: str, event: str) -> bool:
        """Whether `event` was already recorded for the upload (keeps post-finish once-only)."""

    @abstractmethod
    async def deliveries(self, upload_id: str | None = None) -> list[Delivery]:
        """Recorded deliveries (all, or one upload's), oldest first."""

    @abstractmethod
    async def prune_deliveries(self, older_than: float) -> int:
        """Forget settled deliveries not touched for `older_than` seconds."""

    # -- processing jobs ---------------------------------------------------------------------

    @abstractmethod
    async def create_job(self, upload_id: str, plugins: list[str], size: int) -> bool:
        """Queue the processing job of an upload once; False if it already exists."""

    @abstractmethod
    async def get_job(self, upload_id: str) -> Job | None:
        """The job, or None."""

    @abstractmethod
    async def claim_next_job(self, owner: str, lease: float) -> Job | None:
        """Claim the oldest queued job (queued -> processing, run + 1, attempts + 1, a lease of
        `lease` seconds); exactly one caller across all instances gets each job. The new run
        starts with an empty report: rows of earlier runs are queued for purging."""

    @abstractmethod
    async def job_progress(
        self,
        upload_id: str,
        run: int,
        *,
        bytes_done: int,
        records: int,
        progress: dict[str, Any],
        error_count: int,
        lease: float,
    ) -> bool:
        """Record progress and extend the lease; False if run `run` no longer owns the job."""

    @abstractmethod
    async def add_job_errors(self, upload_id: str, run: int, rows: Sequence[NewJobError]) -> bool:
        """Append rows to run `run`'s report if that run still owns the job and the upload is
        not gone; False (nothing written) otherwise."""

    @abstractmethod
    async def job_errors_page(
        self, upload_id: str, run: int, after: tuple[int, int] = (-1, -1), limit: int = 1000
    ) -> list[JobErrorRow]:
        """The next rows of a run's report in (line, seq) order after the key `after`."""

    @abstractmethod
    async def purge_job_errors(self, limit: int = 5000) -> bool:
        """Delete up to `limit` queued report rows; True if there may be more to do."""

    @abstractmethod
    async def finish_job(
        self,
        upload_id: str,
        run: int,
        *,
        state: str,
        result: dict[str, Any],
        error: str | None,
        bytes_done: int,
        records: int,
        error_count: int,
    ) -> bool:
        """processing -> completed/failed with the results, if run `run` still owns it."""

    @abstractmethod
    async def requeue_job(self, upload_id: str, run: int, *, refund: bool = False) -> bool:
        """processing -> queued for a graceful stop of run `run`; `refund` takes the run off
        `attempts` (only runs that finished or crashed count towards the limit)."""

    @abstractmethod
    async def requeue_lapsed_jobs(self, dead_owners: Sequence[str] = ()) -> list[str]:
        """processing -> queued for every job whose lease lapsed or whose owner is dead;
        returns their ids (each is re-queued by exactly one caller)."""

    @abstractmethod
    async def job_owners(self) -> list[str]:
        """Owners of processing jobs (to check their liveness)."""

    @abstractmethod
    async def prune_jobs(self) -> int:
        """Forget jobs whose upload is gone; queue their report rows for purging."""

    @abstractmethod
    async def job_counts(self) -> dict[str, int]:
        """Number of jobs per state (states without jobs are left out)."""

    @abstractmethod
    async def restart_job(self, upload_id: str, plugins: list[str], size: int) -> bool:
        """Queue processing of a finished upload again (the admin's "reprocess").

        A job that ended (COMPLETED or JOB_FAILED) goes back to QUEUED with `plugins` and
        `size`, attempts 0, progress, counters, result and error cleared (its `run` is kept:
        the next claim increments it, so the old run's report rows are purged as usual); an
        upload without a job gets one, as `create_job`. False, changing nothing, while the job
        is QUEUED or PROCESSING."""

    # -- listing (admin dashboard and API) ------------------------------------------------------

    @abstractmethod
    async def list_uploads(
        self,
        where: UploadFilter = UploadFilter(),
        *,
        limit: int = 50,
        before: tuple[float, str] | None = None,
    ) -> list[tuple[UploadInfo, Job | None]]:
        """Uploads matching `where` with their job (or None), newest first: ordered by
        (created, id) descending, at most `limit`. `before` is the (created, id) of the last
        upload of the previous page (keyset pagination: pages stay consistent while uploads
        are created). Tombstones of terminated and expired uploads are listed as long as they
        are kept."""

    @abstractmethod
    async def upload_stats(self, active_since: float) -> UploadStats:
        """Totals for the dashboard; `active_since` is a wall-clock time (see UploadStats)."""
