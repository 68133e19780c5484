"""The registry in PostgreSQL, shared by every instance behind a load balancer (asyncpg).

Every call is one statement on a pooled connection, prepared once per connection (asyncpg's
statement cache), with no BEGIN/COMMIT around it: the hot paths (create, get, set_offset) cost
one round trip each. Calls that must read and write atomically are single statements with
data-modifying CTEs rather than transactions, for the same reason.

Leases and retry times are computed by the database's clock (`now()`), never the caller's, so
instances with skewed clocks agree on when a lease lapsed. Claims hand out fencing tokens
(`jobs.run`, `hook_deliveries.attempts`) that every later write of the claimant names.

A database that cannot be reached (refused, reset, shutting down, out of connections, too slow)
surfaces as `BackendUnavailable` from one place, `_Lease`; the pool drops broken connections and
makes new ones as needed, so calls work again once the server is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from tusserver.errors import AlreadyExists, BackendUnavailable
from tusserver.registry.base import (
    ACTIVE,
    COMPLETE,
    COMPLETED,
    GONE_STATES,
    JOB_FAILED,
    NO_JOB,
    PENDING,
    PROCESSING,
    QUEUED,
    TOMBSTONE_SECONDS,
    Delivery,
    Job,
    JobErrorRow,
    NewDelivery,
    NewJobError,
    Part,
    Registry,
    UploadFilter,
    UploadInfo,
    UploadStats,
)
from tusserver.startup import redact

log = logging.getLogger("tusserver.registry")

# Two-key advisory lock (a key space apart from single bigint keys, which other users of the
# database may hash their own names into): "tuss" and "schema".
MIGRATION_LOCK = (0x74757373, 1)

PING_TIMEOUT = 1.0
CLEAR_SECONDS = 0.1  # finish_recorded calls gathered into one statement
CLOSE_SECONDS = 5.0  # to close a connection gracefully before it is dropped

ALL_RUNS = 9223372036854775807  # job_errors_purge.below_run that purges every run of an upload

# Failures that mean "the database cannot answer right now", not "this call is wrong":
# refused/reset/unreachable sockets and timeouts (TimeoutError is an OSError), dead connections
# (class 08), the server shutting down or starting up (class 57, which includes a statement
# cancelled by a timeout) and a server out of connections, memory or disk (class 53).
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    # a connection left unusable by a cancelled or broken operation (seen during an outage:
    # "cannot switch to state 12; another operation is in progress"); the pool replaces it
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    # the server answers but cannot serve us now: credentials or database changed under a
    # reconnect (28, 3D), a failover left us on a read-only standby (25006), a transaction-
    # mode pooler lost our prepared statements (26000; see README: session mode only)
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,
    asyncpg.exceptions.InvalidCatalogNameError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
    asyncpg.exceptions.InvalidSQLStatementNameError,
)

# Schema versions, applied in order once per database (schema_migrations records them).
# Append new steps; never edit an applied one (hence literals, not this module's constants).
# Times of uploads are the server's epoch seconds (they are shown to clients); leases and retry
# times are the database's timestamptz.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE uploads (
        id text PRIMARY KEY,
        length bigint,
        "offset" bigint NOT NULL DEFAULT 0,
        metadata_raw text,
        metadata jsonb NOT NULL DEFAULT '{}',
        created double precision NOT NULL,
        updated double precision NOT NULL,
        expires double precision,
        state text NOT NULL,
        concat text,
        is_partial boolean NOT NULL DEFAULT false,
        is_final boolean NOT NULL DEFAULT false,
        partials jsonb NOT NULL DEFAULT '[]',
        store_ref text
    );
    CREATE INDEX uploads_state_expires ON uploads (state, expires);
    -- finals_waiting_for runs whenever a partial upload completes: few rows match
    CREATE INDEX uploads_waiting_finals ON uploads (id) WHERE is_final AND state = 'active';

    CREATE TABLE upload_parts (
        upload_id text NOT NULL,
        number integer NOT NULL,
        etag text NOT NULL,
        size bigint NOT NULL,
        PRIMARY KEY (upload_id, number)
    );

    CREATE TABLE hook_deliveries (
        id bigserial PRIMARY KEY,
        event text NOT NULL,
        target text NOT NULL,
        upload_id text NOT NULL,
        payload text NOT NULL,
        state text NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        next_attempt timestamptz NOT NULL,
        lease_until timestamptz,
        owner text,
        last_error text,
        created double precision NOT NULL,
        updated double precision NOT NULL
    );
    CREATE INDEX hook_deliveries_due ON hook_deliveries (state, next_attempt);
    CREATE INDEX hook_deliveries_upload ON hook_deliveries (upload_id, event);

    CREATE TABLE jobs (
        id text PRIMARY KEY,
        state text NOT NULL,
        plugins jsonb NOT NULL,
        size bigint NOT NULL,
        owner text,
        lease_until timestamptz,
        attempts integer NOT NULL DEFAULT 0,
        run integer NOT NULL DEFAULT 0,
        error_count bigint NOT NULL DEFAULT 0,
        bytes_done bigint NOT NULL DEFAULT 0,
        records bigint NOT NULL DEFAULT 0,
        progress jsonb,
        result jsonb,
        error text,
        created double precision NOT NULL,
        started double precision,
        finished double precision,
        updated double precision NOT NULL
    );
    CREATE INDEX jobs_state_created ON jobs (state, created);

    -- Every problem row of a job run (its downloadable report), written in batches while the
    -- job runs. Rows of an older run, or of an upload that was terminated or expired, are
    -- queued in job_errors_purge (by the claim, or by the trigger below: no code path can
    -- forget it) and deleted in small batches: millions of rows never stall one statement.
    CREATE TABLE job_errors (
        seq bigserial PRIMARY KEY,
        upload_id text NOT NULL,
        run integer NOT NULL,
        line bigint NOT NULL,
        plugin text NOT NULL,
        kind text NOT NULL,
        message text NOT NULL,
        excerpt text NOT NULL
    );
    CREATE INDEX job_errors_report ON job_errors (upload_id, run, line, seq);
    CREATE TABLE job_errors_purge (
        upload_id text PRIMARY KEY,
        below_run bigint NOT NULL
    );
    CREATE FUNCTION job_errors_upload_gone() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM job_errors WHERE upload_id = NEW.id) THEN
            INSERT INTO job_errors_purge (upload_id, below_run)
            VALUES (NEW.id, 9223372036854775807)  -- every run
            ON CONFLICT (upload_id) DO UPDATE SET below_run = excluded.below_run;
        END IF;
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER job_errors_upload_gone AFTER UPDATE OF state ON uploads FOR EACH ROW
        WHEN (NEW.state IN ('terminated', 'expired') AND OLD.state IS DISTINCT FROM NEW.state)
        EXECUTE FUNCTION job_errors_upload_gone();
    """,
    # The mark of a completed upload whose finish (post-finish deliveries) is not recorded yet
    # (Registry.pending_finishes). Rows that completed before have false: their finish was
    # handled, or lost, by the release that completed them.
    """
    ALTER TABLE uploads ADD COLUMN finish_pending boolean NOT NULL DEFAULT false;
    -- the finish repair's query; only marked rows are in the index (a handful at most)
    CREATE INDEX uploads_finish_pending ON uploads (updated) WHERE finish_pending;
    """,
    # Metadata as JSON text, not jsonb: tus metadata values are arbitrary decoded bytes, and
    # jsonb refuses the escaped NUL character (\u0000) that a value may hold; the registry
    # never queries inside it.
    """
    ALTER TABLE uploads ALTER COLUMN metadata DROP DEFAULT,
        ALTER COLUMN metadata TYPE text USING metadata::text,
        ALTER COLUMN metadata SET DEFAULT '{}';
    """,
    # Part numbers handed out by a counter on the upload (Registry.reserve_part), starting
    # after the highest part an earlier release recorded (a number handed out never replaces
    # one of those); each part's integrity checksum (NULL for parts recorded before).
    """
    ALTER TABLE uploads ADD COLUMN last_part integer NOT NULL DEFAULT 0;
    UPDATE uploads SET last_part = recorded.number
        FROM (SELECT upload_id, max(number) AS number FROM upload_parts GROUP BY upload_id)
        AS recorded WHERE uploads.id = recorded.upload_id;
    ALTER TABLE upload_parts ADD COLUMN checksum text;
    """,
    # Uploads newest first (Registry.list_uploads): the keyset of every page is a range of
    # this index, read backwards, however many uploads there are.
    "CREATE INDEX uploads_created ON uploads (created, id);",
)

# Epoch seconds by the database's clock (extract gives numeric, which asyncpg would decode as
# Decimal).
DB_NOW = "extract(epoch FROM now())::float8"
# A lease of $n seconds from the database's clock.
LEASE = "now() + make_interval(secs => ${})"
GONE = "(" + ", ".join(f"'{state}'" for state in GONE_STATES) + ")"  # SQL list

UPLOAD_FIELDS = (
    'id, length, "offset", metadata_raw, metadata, created, updated, expires, state, concat,'
    " is_partial, is_final, partials, store_ref"
)
DELIVERY_FIELDS = (
    "id, event, target, upload_id, payload, state, attempts, owner, last_error, created, updated"
)
JOB_FIELDS = (
    "id, state, plugins, size, owner, attempts, run, error_count, bytes_done, records,"
    " progress, result, error, created, started, finished, updated"
)
JOB_NAMES = tuple(name.strip() for name in JOB_FIELDS.split(","))
# A delivery nobody holds: no lease, a lapsed one, or a dead owner's ($n: the dead owners).
UNHELD = "(lease_until IS NULL OR lease_until <= now() OR owner = ANY(${}::text[]))"


_GET = f"SELECT {UPLOAD_FIELDS} FROM uploads WHERE id = $1"
_GET_MANY = f"SELECT {UPLOAD_FIELDS} FROM uploads WHERE id = ANY($1::text[])"
# The offset's compare-and-set ($1 id, $2 offset, $3 expires, $4 state, $5 updated, $6 expected,
# $7 finish pending, $8 store_ref). The store_ref is recorded once: NULL keeps the recorded
# one, a different one fails the whole CAS (its parts belong to another multipart upload: a
# stale writer's).
_MOVE = (
    'UPDATE uploads SET "offset" = $2, expires = $3, state = $4, updated = $5,'
    " finish_pending = $7, store_ref = COALESCE(store_ref, $8)"
    f" WHERE id = $1 AND \"offset\" = $6 AND state = '{ACTIVE}'"
    " AND ($8::text IS NULL OR store_ref IS NULL OR store_ref = $8)"
)
_SET_OFFSET = _MOVE + " RETURNING true"
# ... and the parts with it ($9.. their columns), inserted only for a row the CAS moved; a
# number recorded again replaces its row (the retry of a lost acknowledgement).
_SET_OFFSET_WITH_PARTS = (
    f"WITH moved AS ({_MOVE} RETURNING id), recorded AS (INSERT INTO upload_parts"
    " (upload_id, number, etag, size, checksum) SELECT moved.id, part.* FROM moved,"
    " unnest($9::integer[], $10::text[], $11::bigint[], $12::text[])"
    " AS part(number, etag, size, checksum)"
    " ON CONFLICT (upload_id, number) DO UPDATE SET etag = excluded.etag,"
    " size = excluded.size, checksum = excluded.checksum)"
    " SELECT true FROM moved"
)
# A new job, queued (create_job and restart_job; $1 id, $2 plugins, $3 size).
_NEW_JOB = (
    "INSERT INTO jobs (id, state, plugins, size, created, updated)"
    f" VALUES ($1, '{QUEUED}', $2, $3, {DB_NOW}, {DB_NOW})"
)
# ... or, for restart_job, an ended job queued again as if new, except its run (the fencing
# token never goes back) and its created time.
_RESTART_JOB = (
    _NEW_JOB + f" ON CONFLICT (id) DO UPDATE SET state = '{QUEUED}', plugins = excluded.plugins,"
    " size = excluded.size, owner = NULL, lease_until = NULL, attempts = 0, error_count = 0,"
    " bytes_done = 0, records = 0, progress = NULL, result = NULL, error = NULL,"
    " started = NULL, finished = NULL, updated = excluded.updated"
    f" WHERE jobs.state IN ('{COMPLETED}', '{JOB_FAILED}') RETURNING true"
)
# list_uploads: every upload with its job's columns as job_<name> (NULL without a job)
_LIST_SELECT = (
    f"SELECT {UPLOAD_FIELDS}, job.* FROM uploads LEFT JOIN (SELECT "
    + ", ".join(f"{name} AS job_{name}" for name in JOB_NAMES)
    + " FROM jobs) AS job ON job.job_id = uploads.id"
)
# upload_stats: per state the count, the bytes stored and the unfinished uploads updated
# since $1
_UPLOAD_TOTALS = (
    'SELECT state, count(*), COALESCE(sum("offset"), 0)::bigint, count(*) FILTER (WHERE'
    ' (length IS NULL OR "offset" < length) AND updated >= $1) FROM uploads GROUP BY state'
)
# synchronous_commit off for this statement's own transaction only
_CLEAR_FINISHES = (
    "UPDATE uploads SET finish_pending = false"
    " FROM (SELECT set_config('synchronous_commit', 'off', true)) AS this_commit"
    " WHERE id = ANY($1::text[]) AND finish_pending"
)


def redacted(url: str) -> str:
    """scheme://host:port/db of a database URL: the only form of it shown or logged (the rest
    may carry a password or options)."""
    base = redact(url)
    return base if base == "***" else base + urlsplit(url).path


def _upload(row: asyncpg.Record) -> UploadInfo:
    return UploadInfo(
        id=row["id"],
        length=row["length"],
        offset=row["offset"],
        metadata_raw=row["metadata_raw"],
        metadata=json.loads(row["metadata"]),
        created=row["created"],
        updated=row["updated"],
        expires=row["expires"],
        state=row["state"],
        concat=row["concat"],
        is_partial=row["is_partial"],
        is_final=row["is_final"],
        partials=json.loads(row["partials"]),
        store_ref=row["store_ref"],
    )


def _delivery(row: asyncpg.Record) -> Delivery:
    return Delivery(**dict(row.items()))


def _job(row: asyncpg.Record, prefix: str = "") -> Job:
    """A job from its columns, named `prefix` + the field name."""
    values = {name: row[prefix + name] for name in JOB_NAMES}
    for key in ("plugins", "progress", "result"):
        if values[key] is not None:
            values[key] = json.loads(values[key])
    return Job(**values)


def _listed(row: asyncpg.Record) -> tuple[UploadInfo, Job | None]:
    """A row of _LIST_SELECT: the upload, and its job if the LEFT JOIN found one."""
    return _upload(row), None if row["job_id"] is None else _job(row, "job_")


def _upload_filter(where: UploadFilter, before: tuple[float, str] | None) -> tuple[str, list[Any]]:
    """The WHERE clause of list_uploads (empty when nothing is filtered) and its parameters.
    Only the conditions given are in the statement: an `$n IS NULL OR` would keep the keyset
    out of the index condition of a generic plan."""
    conditions: list[str] = []
    params: list[Any] = []
    if where.states:
        params.append(list(where.states))
        conditions.append(f"uploads.state = ANY(${len(params)}::text[])")
    if where.job_states:
        condition, values = _job_filter(where.job_states, len(params) + 1)
        conditions.append(condition)
        params.extend(values)
    if before is not None:
        params.extend(before)
        conditions.append(f"(uploads.created, uploads.id) < (${len(params) - 1}, ${len(params)})")
    return (" WHERE " + " AND ".join(conditions) if conditions else ""), params


def _job_filter(job_states: Sequence[str], number: int) -> tuple[str, list[Any]]:
    """The condition on the job's state ($`number`, if it needs a parameter) and its
    parameters: on jobs.state itself, and NO_JOB as `job_id IS NULL` (alone, an anti-join),
    which the planner can estimate (a COALESCE(state, 'none') it could not: it guessed few
    matches and hashed every job, 46 ms for 100k uploads; this way a rare state is read from
    the jobs' state index)."""
    named = [state for state in job_states if state != NO_JOB]
    alternatives = [f"job.job_state = ANY(${number}::text[])"] if named else []
    if NO_JOB in job_states:
        alternatives.append("job.job_id IS NULL")
    return "(" + " OR ".join(alternatives) + ")", [named] if named else []


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as `width` column lists, for one INSERT ... SELECT FROM unnest(...) of them all."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * width


def _part_row(part: Part) -> tuple[int, str, int, str | None]:
    """A part's columns after upload_id, in upload_parts order."""
    return (part.number, part.etag, part.size, part.checksum)


def _last_of_each(parts: Sequence[Part]) -> list[Part]:
    """One part per number, the last given (as SQLite's INSERT OR REPLACE leaves it): one
    INSERT ... ON CONFLICT DO UPDATE may not touch the same row twice."""
    return list({part.number: part for part in parts}.values())


def _count(status: str) -> int:
    """Rows a command touched, from its status tag ("DELETE 3")."""
    return int(status.rpartition(" ")[2])


class _Pool:
    """Connections for single statements, cheaper per call than asyncpg's Pool (which runs a
    task and two timers around every call): taking an idle connection is a deque pop, giving
    it back an append, and only a caller that has to wait (every connection busy) arms a timer.
    Idle connections go last in, first out (the busiest stay warm, with their prepared
    statements). Nothing is reset between calls: this registry leaves no session state (its
    one advisory lock is transaction-scoped). A connection that closed or failed is dropped and
    the next caller makes a new one: that is how calls work again after an outage."""

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]], size: int):
        self._connect = connect
        self._size = size
        # made in the running loop; asyncio.get_running_loop() costs a getpid system call
        self.loop = asyncio.get_running_loop()
        self._count = 0  # connections open or being made
        self._idle: deque[asyncpg.Connection] = deque()
        self._waiters: deque[asyncio.Future[asyncpg.Connection | None]] = deque()
        self._retiring: set[asyncio.Task[None]] = set()
        self._drained: asyncio.Future[None] | None = None  # close() waits for calls in flight

    def has_idle(self) -> bool:
        return bool(self._idle)

    def take(self) -> asyncpg.Connection | None:
        """An idle connection, or None: then wait()."""
        while self._idle:
            con = self._idle.pop()
            if not con.is_closed():
                return con
            self._gone()  # the server ended it while idle
        return None

    async def wait(self, timeout: float) -> asyncpg.Connection:
        """A new connection while there is room, else the first one given back (FIFO), within
        `timeout` (TimeoutError)."""
        async with asyncio.timeout(timeout):
            while (con := self.take()) is None:
                if self._count < self._size:
                    return await self._new()
                con = await self._queue()
                if con is not None:
                    return con
            return con

    async def _new(self) -> asyncpg.Connection:
        self._count += 1
        try:
            return await self._connect()
        except BaseException:
            self._gone()
            raise

    async def _queue(self) -> asyncpg.Connection | None:
        """Wait for a connection given back, or for room to make one (None)."""
        future = self.loop.create_future()
        self._waiters.append(future)
        try:
            return await future
        except asyncio.CancelledError:
            if not future.cancelled():
                self._hand(future.result())  # handed to us as we left: to the next waiter
            with contextlib.suppress(ValueError):
                self._waiters.remove(future)
            raise

    def give_back(self, con: asyncpg.Connection, *, trusted: bool) -> None:
        """A connection after a call: used again if the call ended normally or with an error
        of its statement (`trusted`), else closed."""
        if con.is_closed():
            self._gone()
        elif trusted:
            self._hand(con)
        else:
            task = self.loop.create_task(self._retire(con))
            self._retiring.add(task)  # the loop keeps only a weak reference
            task.add_done_callback(self._retiring.discard)

    async def _retire(self, con: asyncpg.Connection) -> None:
        """Close a connection whose call was cancelled or failed mid-statement, keeping its
        place until it is closed. close(), unlike terminate(), first makes sure the server got
        asyncpg's cancel request: a statement stuck behind a lock would otherwise run on, and
        commit, after its caller was told it failed."""
        try:
            with contextlib.suppress(Exception):  # close() aborts the connection on failure
                await con.close(timeout=CLOSE_SECONDS)
        finally:
            self._gone()

    def _gone(self) -> None:
        """One connection fewer: its room goes to the first waiter."""
        self._count -= 1
        self._hand(None)

    def _hand(self, con: asyncpg.Connection | None) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(con)
                return
        if con is not None:
            self._idle.append(con)
        drained = self._drained
        if drained is not None and not drained.done() and self._count == len(self._idle):
            drained.set_result(None)

    async def close(self) -> None:
        """Wait for the calls in flight, then close every connection."""
        if self._count > len(self._idle):
            self._drained = self.loop.create_future()
            await self._drained
        idle, self._idle = self._idle, deque()
        self._count -= len(idle)
        await asyncio.gather(
            *(con.close(timeout=CLOSE_SECONDS) for con in idle), return_exceptions=True
        )

    def terminate(self) -> None:
        """Close every idle connection at once (no call is in flight)."""
        for con in self._idle:
            con.terminate()
        self._count -= len(self._idle)
        self._idle.clear()


class _Retry(Exception):
    """The call that was to do a read for this one was cancelled: read again."""


def _fail(future: asyncio.Future[Any] | None, exc: BaseException) -> None:
    """Pass the failure of a read done for several on to the others (a cancelled reader's
    to be read again)."""
    if future is not None and not future.done():
        future.set_exception(exc if isinstance(exc, Exception) else _Retry())


class _Lease:
    """One pooled connection for an `async with` block, and the one place where driver
    failures that mean the database cannot answer become BackendUnavailable. The driver's
    message names the failure (refused, shutting down), never the password; the URL is shown
    redacted. (A class rather than a generator-based context manager: it runs around every
    call.)"""

    __slots__ = ("_con", "_name", "_pool", "_timeout")

    def __init__(self, pool: _Pool | None, name: str, timeout: float):
        self._pool = pool
        self._name = name
        self._timeout = timeout
        self._con: asyncpg.Connection | None = None

    async def __aenter__(self) -> asyncpg.Connection:
        if self._pool is None:  # never opened, an open() that failed, or closed (shutdown)
            raise BackendUnavailable(f"PostgreSQL registry {self._name} is not open")
        con = self._pool.take()
        if con is None:
            try:
                con = await self._pool.wait(self._timeout)
            except UNAVAILABLE as exc:
                raise self._unavailable(exc) from exc
        self._con = con
        return con

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._pool is not None and self._con is not None
        # an error of the statement leaves the connection as good as before; a failure of the
        # connection, or a call cancelled (or timed out) mid-statement, does not
        trusted = exc is None or (isinstance(exc, Exception) and not isinstance(exc, UNAVAILABLE))
        self._pool.give_back(self._con, trusted=trusted)
        if isinstance(exc, UNAVAILABLE):
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: BaseException) -> BackendUnavailable:
        return BackendUnavailable(
            f"PostgreSQL registry {self._name} unavailable: {type(exc).__name__}: {exc}"
        )


class PostgresRegistry(Registry):
    """Uploads, hook deliveries and jobs in one PostgreSQL database, for any number of
    instances."""

    def __init__(
        self,
        url: str,
        pool_size: int = 10,
        *,
        acquire_timeout: float = 5.0,
        command_timeout: float = 60.0,
    ):
        self._url = url  # may carry a password: shown only as `name`
        self.pool_size = pool_size
        self.acquire_timeout = acquire_timeout
        self.command_timeout = command_timeout
        self.name = redacted(url)
        self._pool: _Pool | None = None
        self._clears: list[str] = []  # uploads whose pending finish is to be cleared
        self._clearing: asyncio.Task[None] | None = None  # while clears are being sent
        # reads waiting for a connection together (the first one has no future: it reads)
        self._reads: list[tuple[str, asyncio.Future[asyncpg.Record | None] | None]] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Make the pool and migrate (which connects, so an unreachable database fails here, at
        start-up); a failed migration leaves it closed. Opening an open registry changes
        nothing."""
        if self._pool is not None:
            return
        self._pool = _Pool(self._connect, self.pool_size)
        try:
            await self._migrate()
        except BaseException:
            pool, self._pool = self._pool, None
            pool.terminate()
            raise

    async def _connect(self) -> asyncpg.Connection:
        con: asyncpg.Connection = await asyncpg.connect(
            self._url,
            command_timeout=self.command_timeout,
            timeout=self.acquire_timeout,  # to connect: a black-holed host fails as fast
        )
        return con

    async def _migrate(self) -> None:
        """Apply the missing MIGRATIONS steps, serialized across instances by an advisory lock
        held until commit: an instance starting beside another waits, then finds them applied."""
        async with self._connection() as con, con.transaction():
            await con.execute("SELECT pg_advisory_xact_lock($1, $2)", *MIGRATION_LOCK)
            await con.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            applied = {row[0] for row in await con.fetch("SELECT version FROM schema_migrations")}
            for version, step in enumerate(MIGRATIONS, start=1):
                if version not in applied:
                    await con.execute(step)
                    await con.execute(
                        "INSERT INTO schema_migrations (version) VALUES ($1)", version
                    )

    async def close(self) -> None:
        """Close the pool: calls in flight (and clears asked for) finish, later ones raise
        BackendUnavailable."""
        await self._cleared()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def ping(self) -> None:
        """SELECT 1, waiting at most PING_TIMEOUT for a connection and as long for the answer:
        a health check must answer fast either way."""
        async with self._connection(PING_TIMEOUT) as con:
            await con.fetchval("SELECT 1", timeout=PING_TIMEOUT)

    def _connection(self, timeout: float | None = None) -> _Lease:
        """A pooled connection for the block, waiting at most `timeout` (by default
        acquire_timeout) for one."""
        return _Lease(self._pool, self.name, timeout or self.acquire_timeout)

    # -- uploads -----------------------------------------------------------------------------

    async def create(self, info: UploadInfo) -> None:
        """Record a new upload (complete at creation: its finish pending); AlreadyExists if
        the id is taken."""
        async with self._connection() as con:
            await _insert_new(
                con,
                f"INSERT INTO uploads ({UPLOAD_FIELDS}, finish_pending) VALUES"
                " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                info.id,
                info.length,
                info.offset,
                info.metadata_raw,
                json.dumps(info.metadata),
                info.created,
                info.updated,
                info.expires,
                info.state,
                info.concat,
                info.is_partial,
                info.is_final,
                json.dumps(info.partials),
                info.store_ref,
                info.state == COMPLETE,
            )

    async def get(self, upload_id: str) -> UploadInfo | None:
        """The upload's info, or None. A read that would wait for a connection (all busy)
        joins the reads waiting already: they go to the database as one statement on the
        first connection given back, so the statements are fewer when the database is
        busiest."""
        if self._pool is not None and self._pool.has_idle():
            async with self._connection() as con:
                row = await con.fetchrow(_GET, upload_id)
        else:
            row = await self._read_together(upload_id)
        return None if row is None else _upload(row)

    async def _read_together(self, upload_id: str) -> asyncpg.Record | None:
        """The upload's row, read with the others waiting for a connection: the first of
        them waits (within its timeout, which the others share) and reads for all."""
        reads = self._reads
        if reads is not None and self._pool is not None:
            future: asyncio.Future[asyncpg.Record | None] = self._pool.loop.create_future()
            reads.append((upload_id, future))
            try:
                return await future
            except _Retry:  # the one reading for us was cancelled
                return await self._read_together(upload_id)
        reads = self._reads = [(upload_id, None)]
        try:
            async with self._connection() as con:
                self._reads = None  # later reads gather anew
                rows = await con.fetch(_GET_MANY, [read[0] for read in reads])
        except BaseException as exc:
            if self._reads is reads:
                self._reads = None
            for _, waiting in reads[1:]:
                _fail(waiting, exc)
            raise
        found = {row["id"]: row for row in rows}
        for read_id, waiting in reads[1:]:
            if waiting is not None and not waiting.done():
                waiting.set_result(found.get(read_id))
        return found.get(upload_id)

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
        """Compare-and-set of the offset of an active upload, one statement either way (the
        row lock orders racing writers): without parts, the plain UPDATE of the hot path;
        with parts, a CTE that inserts them only if the UPDATE moved the row, so they commit
        together or not at all. Completing it marks its finish pending (an active row is
        never marked, so the mark is simply set)."""
        args = (upload_id, offset, expires, state, time.time(), expected, state == COMPLETE)
        async with self._connection() as con:
            if not parts:
                done = await con.fetchval(_SET_OFFSET, *args, store_ref)
            else:
                columns = _columns([_part_row(part) for part in _last_of_each(parts)], 4)
                done = await con.fetchval(_SET_OFFSET_WITH_PARTS, *args, store_ref, *columns)
        return done is not None

    async def set_length(self, upload_id: str, length: int) -> bool:
        """Set a deferred length once, while the upload is active."""
        async with self._connection() as con:
            done = await con.fetchval(
                "UPDATE uploads SET length = $2, updated = $3 WHERE id = $1 AND length IS NULL"
                f" AND state = '{ACTIVE}' RETURNING true",
                upload_id,
                length,
                time.time(),
            )
        return done is not None

    async def set_state(self, upload_id: str, state: str) -> None:
        """Set the state unconditionally (the trigger queues a gone upload's report rows)."""
        async with self._connection() as con:
            await con.execute(
                "UPDATE uploads SET state = $2, updated = $3 WHERE id = $1",
                upload_id,
                state,
                time.time(),
            )

    async def set_state_if(self, upload_id: str, expected: str, state: str) -> bool:
        """Compare-and-set of the state."""
        async with self._connection() as con:
            done = await con.fetchval(
                "UPDATE uploads SET state = $3, updated = $4 WHERE id = $1 AND state = $2"
                " RETURNING true",
                upload_id,
                expected,
                state,
                time.time(),
            )
        return done is not None

    async def finals_waiting_for(self, partial_id: str) -> list[str]:
        """Active final uploads whose partials list names `partial_id`."""
        async with self._connection() as con:
            rows = await con.fetch(
                f"SELECT id FROM uploads WHERE is_final AND state = '{ACTIVE}'"
                " AND partials ? $1 ORDER BY id",
                partial_id,
            )
        return [row[0] for row in rows]

    async def expired_ids(self, now: float, limit: int = 1000) -> list[str]:
        """Active, unfinished uploads past their expiry, earliest first."""
        async with self._connection() as con:
            rows = await con.fetch(
                f"SELECT id FROM uploads WHERE state = '{ACTIVE}' AND expires <= $1"
                ' AND (length IS NULL OR "offset" < length) ORDER BY expires LIMIT $2',
                now,
                limit,
            )
        return [row[0] for row in rows]

    async def finish_recorded(self, upload_id: str) -> None:
        """Clear the upload's pending finish (`updated` stays: it is the upload's, not the
        mark's) in the background: every completed upload asks for one, so the clears of
        CLEAR_SECONDS go to the database together, in one statement committed without
        waiting for the WAL flush. A clear lost (a database crash or outage, this process
        ending) only makes the finish repair finish the upload once more: hooks run at least
        once, post-finish is recorded once. pending_finishes and close wait for the clears
        asked for before them."""
        if self._pool is None:
            raise BackendUnavailable(f"PostgreSQL registry {self.name} is not open")
        self._clears.append(upload_id)
        if self._clearing is None:
            self._clearing = self._pool.loop.create_task(self._clear())

    async def _clear(self) -> None:
        """Background while clears are asked for: those of each CLEAR_SECONDS in one statement
        (ids in order, so that the row locks of two batches never deadlock)."""
        try:
            while self._clears:
                await asyncio.sleep(CLEAR_SECONDS)
                ids, self._clears = sorted(set(self._clears)), []
                try:
                    async with self._connection() as con:
                        await con.execute(_CLEAR_FINISHES, ids)
                except Exception as exc:  # the marks stay: the finish repair sees them
                    log.warning("pending finishes of %d upload(s) not cleared: %s", len(ids), exc)
        finally:
            self._clearing = None

    async def _cleared(self) -> None:
        """Wait for the clears asked for so far."""
        if self._clearing is not None:
            await asyncio.wait([self._clearing])

    async def pending_finishes(self, older_than: float, limit: int = 100) -> list[str]:
        """Complete uploads whose finish is pending, not updated for `older_than` seconds by
        the database's clock, oldest first."""
        await self._cleared()
        async with self._connection() as con:
            rows = await con.fetch(
                f"SELECT id FROM uploads WHERE finish_pending AND state = '{COMPLETE}'"
                f" AND updated <= {DB_NOW} - $1 ORDER BY updated, id LIMIT $2",
                older_than,
                limit,
            )
        return [row[0] for row in rows]

    async def prune_tombstones(self, now: float) -> int:
        """Forget old terminated/expired uploads and their parts, in one statement."""
        async with self._connection() as con:
            return int(
                await con.fetchval(
                    f"WITH gone AS (DELETE FROM uploads WHERE state IN {GONE} AND updated < $1"
                    " RETURNING id), parts AS (DELETE FROM upload_parts"
                    " WHERE upload_id IN (SELECT id FROM gone)) SELECT count(*) FROM gone",
                    now - TOMBSTONE_SECONDS,
                )
            )

    # -- store parts -------------------------------------------------------------------------

    async def reserve_part(self, upload_id: str) -> int:
        """The upload's next part number from its counter, in one statement: the row lock
        serializes every caller of every instance, each gets the number its own increment
        made. KeyError for an unknown upload."""
        async with self._connection() as con:
            number = await con.fetchval(
                "UPDATE uploads SET last_part = last_part + 1 WHERE id = $1 RETURNING last_part",
                upload_id,
            )
        if number is None:
            raise KeyError(upload_id)
        return int(number)

    async def parts(self, upload_id: str) -> list[Part]:
        """The upload's parts in number order."""
        async with self._connection() as con:
            rows = await con.fetch(
                "SELECT number, etag, size, checksum FROM upload_parts WHERE upload_id = $1"
                " ORDER BY number",
                upload_id,
            )
        return [Part(*row) for row in rows]

    async def drop_parts(self, upload_id: str) -> None:
        """Forget the upload's parts."""
        async with self._connection() as con:
            await con.execute("DELETE FROM upload_parts WHERE upload_id = $1", upload_id)

    # -- durable hook deliveries -------------------------------------------------------------

    async def add_deliveries(
        self, deliveries: Sequence[NewDelivery], owner: str, lease: float
    ) -> list[int]:
        """Record deliveries claimed by `owner` (attempts 1, leased by the database's clock),
        in one statement; ids in the order given (the sequence numbers them in row order)."""
        if not deliveries:
            return []
        async with self._connection() as con:
            rows = await con.fetch(
                "INSERT INTO hook_deliveries (event, target, upload_id, payload, state, attempts,"
                f" next_attempt, lease_until, owner, created, updated) SELECT d.event, d.target,"
                f" d.upload_id, d.payload, 'pending', 1, now(), {LEASE.format(6)}, $5, {DB_NOW},"
                f" {DB_NOW} FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])"
                " WITH ORDINALITY AS d(event, target, upload_id, payload, n) ORDER BY d.n"
                " RETURNING id",
                [d.event for d in deliveries],
                [d.target for d in deliveries],
                [d.upload_id for d in deliveries],
                [d.payload for d in deliveries],
                owner,
                lease,
            )
        return sorted(row[0] for row in rows)

    async def due_deliveries(
        self, *, dead_owners: Sequence[str] = (), everything: bool = False, limit: int = 100
    ) -> list[Delivery]:
        """Pending deliveries nobody holds whose retry time (by the database's clock) came."""
        async with self._connection() as con:
            rows = await con.fetch(
                f"SELECT {DELIVERY_FIELDS} FROM hook_deliveries WHERE state = 'pending'"
                f" AND {UNHELD.format(1)} AND ($2 OR next_attempt <= now())"
                " ORDER BY next_attempt, id LIMIT $3",
                list(dead_owners),
                everything,
                limit,
            )
        return [_delivery(row) for row in rows]

    async def claim_delivery(
        self, delivery_id: int, owner: str, lease: float, *, dead_owners: Sequence[str] = ()
    ) -> Delivery | None:
        """Compare-and-set on the lease: racing claimers queue on the row lock and all but the
        first find it held when they re-check."""
        async with self._connection() as con:
            row = await con.fetchrow(
                f"UPDATE hook_deliveries SET lease_until = {LEASE.format(3)}, owner = $2,"
                f" attempts = attempts + 1, updated = {DB_NOW} WHERE id = $1"
                f" AND state = 'pending' AND {UNHELD.format(4)} RETURNING {DELIVERY_FIELDS}",
                delivery_id,
                owner,
                lease,
                list(dead_owners),
            )
        return None if row is None else _delivery(row)

    async def settle_delivery(
        self,
        delivery_id: int,
        attempt: int,
        state: str,
        *,
        retry_in: float | None = None,
        error: str | None = None,
    ) -> bool:
        """End attempt `attempt` (fenced on the attempt number; a settled delivery stays
        settled)."""
        async with self._connection() as con:
            done = await con.fetchval(
                f"UPDATE hook_deliveries SET state = $3, lease_until = NULL, owner = NULL,"
                f" updated = {DB_NOW}, next_attempt = COALESCE(now() + make_interval(secs =>"
                " $4::float8), next_attempt), last_error = COALESCE($5, last_error)"
                f" WHERE id = $1 AND attempts = $2 AND state = '{PENDING}' RETURNING true",
                delivery_id,
                attempt,
                state,
                retry_in,
                None if error is None else error[:2000],
            )
        return done is not None

    async def delivery_owners(self) -> list[str]:
        """Owners holding unexpired leases on pending deliveries."""
        async with self._connection() as con:
            rows = await con.fetch(
                "SELECT DISTINCT owner FROM hook_deliveries WHERE state = 'pending'"
                " AND lease_until > now() AND owner IS NOT NULL"
            )
        return [row[0] for row in rows]

    async def has_delivery(self, upload_id: str, event: str) -> bool:
        """Whether `event` was already recorded for the upload."""
        async with self._connection() as con:
            return bool(
                await con.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM hook_deliveries WHERE upload_id = $1"
                    " AND event = $2)",
                    upload_id,
                    event,
                )
            )

    async def deliveries(self, upload_id: str | None = None) -> list[Delivery]:
        """Recorded deliveries (all, or one upload's), oldest first."""
        async with self._connection() as con:
            rows = await con.fetch(
                f"SELECT {DELIVERY_FIELDS} FROM hook_deliveries"
                " WHERE $1::text IS NULL OR upload_id = $1 ORDER BY id",
                upload_id,
            )
        return [_delivery(row) for row in rows]

    async def prune_deliveries(self, older_than: float) -> int:
        """Forget settled deliveries not touched for `older_than` seconds (database clock)."""
        async with self._connection() as con:
            status = await con.execute(
                "DELETE FROM hook_deliveries WHERE state IN ('done', 'failed')"
                f" AND updated < {DB_NOW} - $1",
                older_than,
            )
        return _count(status)

    # -- processing jobs ---------------------------------------------------------------------

    async def create_job(self, upload_id: str, plugins: list[str], size: int) -> bool:
        """Queue the job once (the primary key decides between racing callers)."""
        async with self._connection() as con:
            done = await con.fetchval(
                _NEW_JOB + " ON CONFLICT (id) DO NOTHING RETURNING true",
                upload_id,
                json.dumps(plugins),
                size,
            )
        return done is not None

    async def get_job(self, upload_id: str) -> Job | None:
        """The job, or None."""
        async with self._connection() as con:
            row = await con.fetchrow(f"SELECT {JOB_FIELDS} FROM jobs WHERE id = $1", upload_id)
        return None if row is None else _job(row)

    async def claim_next_job(self, owner: str, lease: float) -> Job | None:
        """Claim the oldest queued job in one statement: SKIP LOCKED lets racing instances take
        different jobs instead of queueing on the same row, and the same statement queues the
        earlier runs' report rows for purging."""
        async with self._connection() as con:
            row = await con.fetchrow(
                f"WITH next AS (SELECT id FROM jobs WHERE state = '{QUEUED}'"
                " ORDER BY created, id LIMIT 1 FOR UPDATE SKIP LOCKED),"
                f" claimed AS (UPDATE jobs SET state = '{PROCESSING}', owner = $1,"
                f" lease_until = {LEASE.format(2)}, started = {DB_NOW}, updated = {DB_NOW},"
                " attempts = attempts + 1, run = run + 1, bytes_done = 0, records = 0,"
                " progress = NULL, error_count = 0 WHERE id = (SELECT id FROM next)"
                f" RETURNING {JOB_FIELDS}),"
                " purge AS (INSERT INTO job_errors_purge (upload_id, below_run)"
                " SELECT id, run FROM claimed"
                " WHERE EXISTS (SELECT 1 FROM job_errors WHERE upload_id = claimed.id)"
                " ON CONFLICT (upload_id) DO UPDATE"
                " SET below_run = greatest(job_errors_purge.below_run, excluded.below_run))"
                " SELECT * FROM claimed",
                owner,
                lease,
            )
        return None if row is None else _job(row)

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
        """Record progress and extend the lease, fenced on the run."""
        async with self._connection() as con:
            done = await con.fetchval(
                f"UPDATE jobs SET lease_until = {LEASE.format(3)}, updated = {DB_NOW},"
                " bytes_done = $4, records = $5, progress = $6, error_count = $7"
                f" WHERE id = $1 AND run = $2 AND state = '{PROCESSING}' RETURNING true",
                upload_id,
                run,
                lease,
                bytes_done,
                records,
                json.dumps(progress),
                error_count,
            )
        return done is not None

    async def add_job_errors(self, upload_id: str, run: int, rows: Sequence[NewJobError]) -> bool:
        """Append rows if run `run` owns the job and the upload is not gone, in one statement.

        The check locks the job and upload rows (FOR SHARE) until the rows are in: a
        termination waits for them, and its trigger then queues them for purging; one that
        committed first makes the check fail. Either way no row outlives its upload."""
        async with self._connection() as con:
            return bool(
                await con.fetchval(
                    "WITH owned AS (SELECT jobs.id FROM jobs JOIN uploads ON uploads.id = jobs.id"
                    f" WHERE jobs.id = $1 AND jobs.run = $2 AND jobs.state = '{PROCESSING}'"
                    f" AND uploads.state NOT IN {GONE} FOR SHARE),"
                    " added AS (INSERT INTO job_errors (upload_id, run, plugin, line, kind,"
                    " message, excerpt) SELECT $1, $2, r.* FROM owned, unnest($3::text[],"
                    " $4::bigint[], $5::text[], $6::text[], $7::text[]) AS r)"
                    " SELECT EXISTS (SELECT 1 FROM owned)",
                    upload_id,
                    run,
                    *_columns(rows, 5),
                )
            )

    async def job_errors_page(
        self, upload_id: str, run: int, after: tuple[int, int] = (-1, -1), limit: int = 1000
    ) -> list[JobErrorRow]:
        """Keyset paging on (line, seq): every page costs the same, however deep."""
        async with self._connection() as con:
            rows = await con.fetch(
                "SELECT line, seq, plugin, kind, message, excerpt FROM job_errors"
                " WHERE upload_id = $1 AND run = $2 AND (line, seq) > ($3, $4)"
                " ORDER BY line, seq LIMIT $5",
                upload_id,
                run,
                *after,
                limit,
            )
        return [JobErrorRow(*row) for row in rows]

    async def purge_job_errors(self, limit: int = 5000) -> bool:
        """Delete up to `limit` rows of one queued upload in one statement; its queue entry goes
        too once a batch comes up short. The entry is locked (SKIP LOCKED: instances purge
        different uploads), so a claim queueing a newer run waits and re-queues after."""
        async with self._connection() as con:
            return bool(
                await con.fetchval(
                    "WITH queued AS (SELECT upload_id, below_run FROM job_errors_purge LIMIT 1"
                    " FOR UPDATE SKIP LOCKED), deleted AS (DELETE FROM job_errors"
                    " WHERE seq IN (SELECT seq FROM job_errors, queued"
                    " WHERE job_errors.upload_id = queued.upload_id"
                    " AND job_errors.run < queued.below_run LIMIT $1) RETURNING 1),"
                    " done AS (DELETE FROM job_errors_purge USING queued"
                    " WHERE job_errors_purge.upload_id = queued.upload_id"
                    " AND (SELECT count(*) FROM deleted) < $1)"
                    " SELECT EXISTS (SELECT 1 FROM queued)",
                    limit,
                )
            )

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
        """processing -> completed/failed, fenced on the run."""
        async with self._connection() as con:
            done = await con.fetchval(
                f"UPDATE jobs SET state = $3, result = $4, error = $5, finished = {DB_NOW},"
                f" updated = {DB_NOW}, lease_until = NULL, bytes_done = $6, records = $7,"
                f" error_count = $8 WHERE id = $1 AND run = $2 AND state = '{PROCESSING}'"
                " RETURNING true",
                upload_id,
                run,
                state,
                json.dumps(result),
                error,
                bytes_done,
                records,
                error_count,
            )
        return done is not None

    async def requeue_job(self, upload_id: str, run: int, *, refund: bool = False) -> bool:
        """processing -> queued, fenced on the run; `refund` takes the run off `attempts`."""
        async with self._connection() as con:
            done = await con.fetchval(
                f"UPDATE jobs SET state = '{QUEUED}', owner = NULL, lease_until = NULL,"
                f" updated = {DB_NOW}, attempts = attempts - $3"
                f" WHERE id = $1 AND run = $2 AND state = '{PROCESSING}' RETURNING true",
                upload_id,
                run,
                int(refund),
            )
        return done is not None

    async def requeue_lapsed_jobs(self, dead_owners: Sequence[str] = ()) -> list[str]:
        """One UPDATE: racing callers queue on each row's lock and re-check, so each job is
        re-queued (and returned) by exactly one of them."""
        async with self._connection() as con:
            rows = await con.fetch(
                f"UPDATE jobs SET state = '{QUEUED}', owner = NULL, lease_until = NULL,"
                f" updated = {DB_NOW} WHERE state = '{PROCESSING}'"
                " AND (lease_until <= now() OR owner = ANY($1::text[])) RETURNING id",
                list(dead_owners),
            )
        return [row[0] for row in rows]

    async def job_owners(self) -> list[str]:
        """Owners of processing jobs."""
        async with self._connection() as con:
            rows = await con.fetch(
                f"SELECT DISTINCT owner FROM jobs WHERE state = '{PROCESSING}'"
                " AND owner IS NOT NULL"
            )
        return [row[0] for row in rows]

    async def prune_jobs(self) -> int:
        """Forget settled or queued jobs whose upload is gone (or pruned) and queue their
        report rows for purging, in one statement."""
        async with self._connection() as con:
            return int(
                await con.fetchval(
                    f"WITH gone AS (DELETE FROM jobs WHERE state <> '{PROCESSING}'"
                    " AND NOT EXISTS (SELECT 1 FROM uploads WHERE uploads.id = jobs.id"
                    f" AND uploads.state NOT IN {GONE}) RETURNING id),"
                    " purge AS (INSERT INTO job_errors_purge (upload_id, below_run)"
                    f" SELECT id, {ALL_RUNS} FROM gone"
                    " WHERE EXISTS (SELECT 1 FROM job_errors WHERE upload_id = gone.id)"
                    " ON CONFLICT (upload_id) DO UPDATE SET below_run = excluded.below_run)"
                    " SELECT count(*) FROM gone"
                )
            )

    async def job_counts(self) -> dict[str, int]:
        """Number of jobs per state."""
        async with self._connection() as con:
            rows = await con.fetch("SELECT state, count(*) FROM jobs GROUP BY state")
        return {row[0]: row[1] for row in rows}

    async def restart_job(self, upload_id: str, plugins: list[str], size: int) -> bool:
        """Queue an ended job again, or a new one, in one upsert: racing callers queue on the
        row lock (or on the first one's insert) and re-check the state, so exactly one queues
        the run; a queued or processing job is left alone."""
        async with self._connection() as con:
            done = await con.fetchval(_RESTART_JOB, upload_id, json.dumps(plugins), size)
        return done is not None

    # -- listing -----------------------------------------------------------------------------

    async def list_uploads(
        self,
        where: UploadFilter = UploadFilter(),  # noqa: B008 - frozen, as in Registry
        *,
        limit: int = 50,
        before: tuple[float, str] | None = None,
    ) -> list[tuple[UploadInfo, Job | None]]:
        """Uploads matching `where` with their job, newest first (the (created, id) index, or
        for a rare state whichever the planner finds cheaper)."""
        condition, params = _upload_filter(where, before)
        async with self._connection() as con:
            rows = await con.fetch(
                f"{_LIST_SELECT}{condition} ORDER BY uploads.created DESC, uploads.id DESC"
                f" LIMIT ${len(params) + 1}",
                *params,
                limit,
            )
        return [_listed(row) for row in rows]

    async def upload_stats(self, active_since: float) -> UploadStats:
        """Totals from one pass over the uploads (per state: count, bytes, in flight), and the
        job counts in a second statement (the dashboard's totals need not be one snapshot)."""
        async with self._connection() as con:
            rows = await con.fetch(_UPLOAD_TOTALS, active_since)
        return UploadStats(
            by_state={state: count for state, count, _, _ in rows},
            bytes_stored=sum(stored for state, _, stored, _ in rows if state in (ACTIVE, COMPLETE)),
            in_flight=sum(moving for state, _, _, moving in rows if state == ACTIVE),
            jobs=await self.job_counts(),
        )


async def _insert_new(con: asyncpg.Connection, sql: str, *args: object) -> None:
    """An INSERT of a new upload: a taken id is AlreadyExists, not a driver error."""
    try:
        await con.execute(sql, *args)
    except asyncpg.UniqueViolationError as exc:
        raise AlreadyExists(str(args[0])) from exc
