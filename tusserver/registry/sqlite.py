"""The SQLite registry: uploads, hook deliveries and processing jobs of one host, in one file.

Upload info lives only here (the store keeps bare data files), so one place answers "what is
the offset of X" for every worker process. WAL mode lets readers run beside the single writer;
each write is one short IMMEDIATE transaction, and a busy timeout absorbs contention between
workers. The offset written here is the durability promise: the store has already fsynced
those bytes.

Calls run inline on the event loop, as the synchronous registry before this one did (it
measured fine: the file is local, each query short). The exceptions are the bulk calls of the
processing report (writing a batch of rows, reading a page, purging) and of the admin
dashboard (a listing that may walk many uploads to fill a page of a rare filter, the totals
over every upload: tens of milliseconds for 100k), which go to a worker thread. That does
not make them free: a lock (a threading.Lock) serialises the one connection between those
threads and the event loop, so while a bulk call runs, the next registry call made on the
event loop blocks the loop, and with it every request of the process, until the bulk call
ends. Hence the dashboard's live view shares one listing per second and one computation of
the totals every few seconds between all its streams.

Every driver failure (locked beyond the busy timeout, disk I/O error, read-only file) leaves
through one wrapper as `BackendUnavailable`, so callers never see sqlite3 exceptions.
"""

from __future__ import annotations

import errno
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import anyio
from sqlite_utils import Database

from tusserver.errors import AlreadyExists, BackendUnavailable, StoreFull
from tusserver.registry.base import (
    ACTIVE,
    COMPLETE,
    GONE_STATES,
    NO_JOB,
    PENDING,
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

# The column sets of the first schema version (see SCHEMA_STEPS), as sqlite-utils creates them.
UPLOAD_COLUMNS: dict[str, Any] = {
    "id": str,
    "length": int,
    "offset": int,
    "metadata_raw": str,
    "metadata": str,
    "created": float,
    "updated": float,
    "expires": float,
    "state": str,
    "concat": str,
    "is_partial": int,
    "is_final": int,
    "partials": str,
}

# Durable hook deliveries (post-finish): one row per event and receiver, kept until delivered
# or given up, so a crash or restart never loses one (see tusserver.hooks.outbox).
HOOK_DELIVERY_COLUMNS: dict[str, Any] = {
    "id": int,
    "event": str,
    "target": str,
    "upload_id": str,
    "payload": str,
    "state": str,  # pending, done, failed
    "attempts": int,  # claims so far: the fencing token of the current one
    "next_attempt": float,
    "lease_until": float,  # an owner is delivering it until then
    "owner": str,  # the liveness token of the process holding the lease
    "last_error": str,
    "created": float,
    "updated": float,
}

# Post-finish processing jobs (see tusserver.processing.jobs): one row per upload, claimed by
# exactly one worker with a compare-and-set on `state`. `heartbeat` is no longer read (the
# second schema version added `lease_until`); it stays because dropping it rewrites the table.
JOB_COLUMNS: dict[str, Any] = {
    "id": str,  # the upload id
    "state": str,  # queued, processing, completed, failed
    "plugins": str,  # JSON list of plugin names
    "size": int,
    "owner": str,  # the liveness token of the worker processing it
    "heartbeat": float,
    "attempts": int,
    "run": int,  # +1 on every claim (never refunded): the fencing token, tags job_errors rows
    "error_count": int,  # problem rows reported so far by this run
    "bytes_done": int,
    "records": int,
    "progress": str,  # JSON: live plugin counters
    "result": str,  # JSON: per-plugin results
    "error": str,
    "created": float,
    "started": float,
    "finished": float,
    "updated": float,
}

# Every problem row of a job run (the downloadable errors.csv / errors.ndjson report), written
# in batches while the job runs, so every worker can serve it. Rows of an older run, or of an
# upload that was terminated or expired, are queued in job_errors_purge (by claim_next_job,
# prune_jobs, or a trigger on the uploads table: no code path can forget it) and deleted in
# small batches by the processing workers: millions of rows never stall one transaction.
JOB_ERRORS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS job_errors (seq INTEGER PRIMARY KEY, upload_id TEXT NOT NULL,"
    " run INTEGER NOT NULL, line INTEGER NOT NULL, plugin TEXT NOT NULL, kind TEXT NOT NULL,"
    " message TEXT NOT NULL, excerpt TEXT NOT NULL)",
    # the report is read in (line, seq) order: the index (with the rowid) serves the keyset
    "CREATE INDEX IF NOT EXISTS job_errors_report ON job_errors (upload_id, run, line)",
    "CREATE TABLE IF NOT EXISTS job_errors_purge (upload_id TEXT PRIMARY KEY,"
    " below_run INTEGER NOT NULL)",
    "CREATE TRIGGER IF NOT EXISTS job_errors_upload_gone AFTER UPDATE OF state ON uploads"
    " WHEN NEW.state IN ('terminated', 'expired')"
    " AND EXISTS (SELECT 1 FROM job_errors WHERE upload_id = NEW.id)"
    " BEGIN INSERT OR REPLACE INTO job_errors_purge VALUES (NEW.id, 9223372036854775807); END",
)
# How long a call waits for another worker's write transaction before the database counts as
# unavailable (writes are short: this absorbs contention, it does not hide an outage).
BUSY_TIMEOUT = 30.0

_ALL_RUNS = 9223372036854775807  # below_run that purges every run of an upload
_PURGE_UPSERT = (
    "INSERT INTO job_errors_purge (upload_id, below_run) SELECT ?, ? WHERE EXISTS"
    " (SELECT 1 FROM job_errors WHERE upload_id = ?) ON CONFLICT (upload_id)"
    " DO UPDATE SET below_run = max(below_run, excluded.below_run)"
)


def _first_schema(db: Database) -> None:
    """Version 1: everything before schema versions existed. Databases of every earlier
    release have user_version 0 and some subset of this, so each part is created if missing."""
    uploads = db.table("uploads")
    if not uploads.exists():
        uploads.create(UPLOAD_COLUMNS, pk="id", not_null={"state"})
        uploads.create_index(["state", "expires"])
    # finals_waiting_for runs whenever a partial upload completes
    uploads.create_index(["is_final", "state"], if_not_exists=True)
    jobs = db.table("jobs")
    if not jobs.exists():
        jobs.create(JOB_COLUMNS, pk="id", not_null={"state"})
        jobs.create_index(["state", "created"])
    for name in ("run", "error_count"):  # tables from before the columns existed
        if name not in jobs.columns_dict:
            jobs.add_column(name, int)
    for statement in JOB_ERRORS_SCHEMA:
        db.execute(statement)
    deliveries = db.table("hook_deliveries")
    if not deliveries.exists():
        deliveries.create(HOOK_DELIVERY_COLUMNS, pk="id", not_null={"state"})
        deliveries.create_index(["state", "next_attempt"])
    deliveries.create_index(["upload_id", "event"], if_not_exists=True)
    if "owner" not in deliveries.columns_dict:  # tables from before the column existed
        deliveries.add_column("owner", str)


def _swappable_backends(db: Database) -> None:
    """Version 2: the store's handle and parts of an upload, leases on jobs."""
    db.table("uploads").add_column("store_ref", str)
    db.table("upload_parts").create(
        {"upload_id": str, "number": int, "etag": str, "size": int},
        pk=("upload_id", "number"),
        not_null={"etag", "size"},
    )
    db.table("jobs").add_column("lease_until", float)


def _finish_pending(db: Database) -> None:
    """Version 3: the mark of a completed upload whose finish (post-finish deliveries) is not
    recorded yet (see Registry.pending_finishes). Rows that completed before have 0: their
    finish was handled, or lost, by the release that completed them."""
    db.execute("ALTER TABLE uploads ADD COLUMN finish_pending INTEGER NOT NULL DEFAULT 0")
    # the repair sweep's query; only marked rows are in the index (a handful at most)
    db.execute(
        "CREATE INDEX IF NOT EXISTS uploads_finish_pending ON uploads (updated)"
        " WHERE finish_pending = 1"
    )


def _reserved_parts(db: Database) -> None:
    """Version 4: part numbers handed out by a counter on the upload (Registry.reserve_part),
    and each part's integrity checksum (NULL for parts recorded before: they had none).

    The counter starts after the highest part an earlier release recorded, so a number it
    hands out never replaces one of those parts."""
    db.execute("ALTER TABLE uploads ADD COLUMN last_part INTEGER NOT NULL DEFAULT 0")
    db.execute(
        "UPDATE uploads SET last_part = (SELECT max(number) FROM upload_parts"
        " WHERE upload_id = uploads.id) WHERE id IN (SELECT upload_id FROM upload_parts)"
    )
    db.execute("ALTER TABLE upload_parts ADD COLUMN checksum TEXT")


def _listing(db: Database) -> None:
    """Version 5: uploads newest first (Registry.list_uploads): the keyset of every page is
    a range of this index, read backwards, however many uploads there are."""
    db.execute("CREATE INDEX IF NOT EXISTS uploads_created ON uploads (created, id)")


# PRAGMA user_version is the number of steps applied; open() applies the rest in one
# transaction. A change of schema is a new step at the end, never an edit of an old one.
SCHEMA_STEPS: tuple[Callable[[Database], None], ...] = (
    _first_schema,
    _swappable_backends,
    _finish_pending,
    _reserved_parts,
    _listing,
)

_UPLOAD_FIELDS = (*UPLOAD_COLUMNS, "store_ref")
_UPLOAD_SELECT = "SELECT " + ", ".join(f'"{name}"' for name in _UPLOAD_FIELDS) + " FROM uploads"
# finish_pending is the registry's own: set from the state, never read into UploadInfo
_UPLOAD_INSERT = (
    "INSERT INTO uploads ("
    + ", ".join(f'"{name}"' for name in (*_UPLOAD_FIELDS, "finish_pending"))
    + ") VALUES ("
    + ", ".join("?" for _ in (*_UPLOAD_FIELDS, "finish_pending"))
    + ")"
)
# The offset's compare-and-set; a store_ref is recorded once: NULL keeps the recorded one, a
# different one fails the whole CAS (its parts belong to another multipart upload: a stale
# writer's). Completing marks the finish pending (an active row is never marked, so the mark
# is simply set).
_SET_OFFSET = (
    'UPDATE uploads SET "offset" = :offset, expires = :expires, state = :state,'
    " updated = :updated, finish_pending = (finish_pending OR :state = 'complete'),"
    " store_ref = COALESCE(store_ref, :ref)"
    " WHERE id = :id AND \"offset\" = :expected AND state = 'active'"
    " AND (:ref IS NULL OR store_ref IS NULL OR store_ref = :ref)"
)
# a part number recorded again replaces its row (the retry of a lost acknowledgement)
_PUT_PART = (
    "INSERT OR REPLACE INTO upload_parts (upload_id, number, etag, size, checksum)"
    " VALUES (?, ?, ?, ?, ?)"
)
# in the order of the Delivery and Job dataclasses' fields
_DELIVERY_FIELDS = (
    "id, event, target, upload_id, payload, state, attempts, owner, last_error, created, updated"
)
_JOB_FIELDS = (
    "id",
    "state",
    "plugins",
    "size",
    "owner",
    "attempts",
    "run",
    "error_count",
    "bytes_done",
    "records",
    "progress",
    "result",
    "error",
    "created",
    "started",
    "finished",
    "updated",
)
_JOB_SELECT = ", ".join(_JOB_FIELDS)
# A new job, queued (create_job and restart_job); parameters: id, plugins, size, now, now.
_NEW_JOB = (
    "INSERT INTO jobs (id, state, plugins, size, attempts, run, error_count, bytes_done,"
    " records, created, updated) VALUES (?, 'queued', ?, ?, 0, 0, 0, 0, 0, ?, ?)"
)
# ... or, for restart_job, an ended job queued again as if new, except its run (the fencing
# token never goes back) and its created time.
_RESTART_JOB = (
    _NEW_JOB + " ON CONFLICT (id) DO UPDATE SET state = 'queued', plugins = excluded.plugins,"
    " size = excluded.size, owner = NULL, lease_until = NULL, attempts = 0, error_count = 0,"
    " bytes_done = 0, records = 0, progress = NULL, result = NULL, error = NULL,"
    " started = NULL, finished = NULL, updated = excluded.updated"
    " WHERE jobs.state IN ('completed', 'failed')"
)
# upload_stats: per state the count, the bytes stored and the unfinished uploads updated
# since the parameter
_UPLOAD_TOTALS = (
    'SELECT state, count(*), COALESCE(sum("offset"), 0), count(*) FILTER (WHERE'
    ' (length IS NULL OR "offset" < length) AND updated >= ?) FROM uploads GROUP BY state'
)
# list_uploads: every upload with its job's columns (NULL without one)
_LIST_SELECT = (
    "SELECT "
    + ", ".join(f'uploads."{name}"' for name in _UPLOAD_FIELDS)
    + ", "
    + ", ".join(f"jobs.{name}" for name in _JOB_FIELDS)
    + " FROM uploads LEFT JOIN jobs ON jobs.id = uploads.id"
)


def _upload_row(info: UploadInfo) -> list[Any]:
    """Column values of an upload in _UPLOAD_FIELDS order (lists and dicts as JSON)."""
    row = {name: getattr(info, name) for name in _UPLOAD_FIELDS}
    row.update(
        metadata=json.dumps(info.metadata),
        partials=json.dumps(info.partials),
        is_partial=int(info.is_partial),
        is_final=int(info.is_final),
    )
    return list(row.values())


def _upload_of(row: Sequence[Any]) -> UploadInfo:
    """Inverse of _upload_row."""
    values = dict(zip(_UPLOAD_FIELDS, row, strict=True))
    values["metadata"] = json.loads(values["metadata"] or "{}")
    values["partials"] = json.loads(values["partials"] or "[]")
    values["is_partial"] = bool(values["is_partial"])
    values["is_final"] = bool(values["is_final"])
    return UploadInfo(**values)


def _part_row(part: Part) -> tuple[int, str, int, str | None]:
    """Column values of a part, after upload_id, in _PUT_PART order."""
    return (part.number, part.etag, part.size, part.checksum)


def _job_of(row: Sequence[Any]) -> Job:
    """A jobs row as a Job (JSON decoded; run and error_count are NULL in rows older than
    those columns)."""
    values = dict(zip(_JOB_FIELDS, row, strict=True))
    values["plugins"] = json.loads(values["plugins"] or "[]")
    for key in ("progress", "result"):
        values[key] = json.loads(values[key]) if values[key] else None
    values["run"] = values["run"] or 0
    values["error_count"] = values["error_count"] or 0
    return Job(**values)


def _listed(row: Sequence[Any]) -> tuple[UploadInfo, Job | None]:
    """A row of _LIST_SELECT: the upload, and its job if the LEFT JOIN found one."""
    job = row[len(_UPLOAD_FIELDS) :]
    return _upload_of(row[: len(_UPLOAD_FIELDS)]), None if job[0] is None else _job_of(job)


def _upload_filter(where: UploadFilter, before: tuple[float, str] | None) -> tuple[str, list[Any]]:
    """The WHERE clause of list_uploads (empty when nothing is filtered) and its parameters.

    The plan is always the walk of the (created, id) index with a look-up of each upload's
    job by its key: SQLite has no statistics to choose better. The `+` keeps the planner off
    the (state, expires) index, and the COALESCE (a missing job counts as state NO_JOB:
    jobs.state is never NULL in a row that exists) off the jobs' state index: with either,
    a filter of a common state sorted every matching row (35 and 105 ms for 100k uploads)."""
    conditions: list[str] = []
    params: list[Any] = []
    if where.states:
        conditions.append(f"+uploads.state IN ({_marks(where.states)})")
        params.extend(where.states)
    if where.job_states:
        conditions.append(f"COALESCE(jobs.state, '{NO_JOB}') IN ({_marks(where.job_states)})")
        params.extend(where.job_states)
    if before is not None:
        conditions.append("(uploads.created, uploads.id) < (?, ?)")
        params.extend(before)
    return (" WHERE " + " AND ".join(conditions) if conditions else ""), params


def _marks(values: Sequence[Any]) -> str:
    """Placeholders for an IN list; an empty list matches nothing (`IN (NULL)`)."""
    return ",".join("?" * len(values)) or "NULL"


def _unheld(dead_owners: Sequence[str]) -> str:
    """SQL condition: a pending delivery nobody holds (no lease, a lapsed one, or a dead
    owner's). Its parameters: now, *dead_owners."""
    return (
        "state = 'pending' AND (lease_until IS NULL OR lease_until <= ?"
        f" OR owner IN ({_marks(dead_owners)}))"
    )


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL (it stays so). SQLite answers "locked" at once, without waiting
    for the busy timeout, when workers opening a new file switch at the same moment, so the
    switch is retried here for as long."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or time.monotonic() > deadline:
                raise
        time.sleep(0.01)


@contextmanager
def _unavailable() -> Iterator[None]:
    """The one translation of driver failures: the database cannot be used right now.

    Integrity and programming errors are bugs of the caller, not an unavailable database:
    they stay what they are."""
    try:
        yield
    except (sqlite3.IntegrityError, sqlite3.ProgrammingError):
        raise
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            raise StoreFull(errno.ENOSPC, "registry database: disk full") from exc
        raise BackendUnavailable(f"registry database: {exc}") from exc
    except OSError as exc:
        raise BackendUnavailable(f"registry database: {exc}") from exc


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """One IMMEDIATE transaction: the write lock is taken up front, so no upgrade deadlock."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with suppress(sqlite3.Error):  # the original error says more
                conn.execute("ROLLBACK")
        raise


class SqliteRegistry(Registry):
    """SQLite-backed registry shared by the worker processes of one host."""

    def __init__(self, path: Path):
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and bring the schema up to date (a no-op when already open)."""
        if sqlite3.sqlite_version_info < (3, 35, 0):
            raise RuntimeError(f"SQLite {sqlite3.sqlite_version} is too old: 3.35 needed")
        with self._lock, _unavailable():
            if self._conn is not None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                str(self.path),
                timeout=BUSY_TIMEOUT,
                isolation_level=None,
                check_same_thread=False,
            )
            try:
                _use_wal(conn)
                conn.execute("PRAGMA synchronous=NORMAL")
                self._migrate(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        """Apply the missing SCHEMA_STEPS. The version is read under the write lock, so when
        several workers open a new database at once, one migrates and the others find it done.
        """
        db = Database(conn)
        with _immediate(conn):
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            for step in SCHEMA_STEPS[version:]:
                step(db)
            if version < len(SCHEMA_STEPS):
                conn.execute(f"PRAGMA user_version = {len(SCHEMA_STEPS)}")

    async def close(self) -> None:
        """Close the connection (idempotent); later calls raise BackendUnavailable."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def ping(self) -> None:
        """One trivial query that touches the uploads table (health check)."""
        self._rows("SELECT count(*) FROM uploads WHERE id = ''")

    @contextmanager
    def _session(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """The connection under the lock, in an IMMEDIATE transaction when writing; every
        query runs in here, so every driver failure becomes BackendUnavailable."""
        with self._lock, _unavailable():
            conn = self._conn
            if conn is None:
                raise BackendUnavailable("registry database is not open")
            if not write:
                yield conn
                return
            with _immediate(conn):
                yield conn

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """A read query's rows."""
        with self._session() as conn:
            return conn.execute(sql, params).fetchall()

    def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One write statement in its own transaction; the number of rows it changed."""
        with self._session(write=True) as conn:
            return conn.execute(sql, params).rowcount

    def _cas(self, sql: str, params: Sequence[Any]) -> bool:
        """A compare-and-set on one row: True if this call changed it."""
        return self._write(sql, params) == 1

    # -- uploads -----------------------------------------------------------------------------

    # These run several times per request: plain SQL, because sqlite-utils' Table.insert and
    # update re-read the schema (PRAGMA) and the row on every call, which measured as ~30% of
    # the event loop's time in the small-uploads benchmark.

    async def create(self, info: UploadInfo) -> None:
        """Record a new upload (complete at creation: its finish pending); AlreadyExists if
        the id is taken."""
        try:
            self._write(_UPLOAD_INSERT, [*_upload_row(info), int(info.state == COMPLETE)])
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(info.id) from exc

    async def get(self, upload_id: str) -> UploadInfo | None:
        """The upload's info, or None if the id was never created (or was pruned)."""
        rows = self._rows(_UPLOAD_SELECT + " WHERE id = ?", [upload_id])
        return _upload_of(rows[0]) if rows else None

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
        """Compare-and-set of the offset of an active upload: False (nothing changed) if the
        offset is not `expected` or the upload is no longer active. The parts and store_ref go
        in the same IMMEDIATE transaction, written only once the offset moved, so the part
        list never disagrees with the offset."""
        params = {
            "offset": offset,
            "expires": expires,
            "state": state,
            "updated": time.time(),
            "ref": store_ref,
            "id": upload_id,
            "expected": expected,
        }
        with self._session(write=True) as conn:
            moved = conn.execute(_SET_OFFSET, params).rowcount == 1
            if moved and parts:
                conn.executemany(_PUT_PART, [(upload_id, *_part_row(part)) for part in parts])
        return moved

    async def set_length(self, upload_id: str, length: int) -> bool:
        """Set a deferred length once, while the upload is active."""
        return self._cas(
            "UPDATE uploads SET length = ?, updated = ? WHERE id = ? AND length IS NULL"
            " AND state = 'active'",
            [length, time.time(), upload_id],
        )

    async def set_state(self, upload_id: str, state: str) -> None:
        """Set the state unconditionally (termination)."""
        self._write(
            "UPDATE uploads SET state = ?, updated = ? WHERE id = ?",
            [state, time.time(), upload_id],
        )

    async def set_state_if(self, upload_id: str, expected: str, state: str) -> bool:
        """Compare-and-set of the state; True if this call made the change."""
        return self._cas(
            "UPDATE uploads SET state = ?, updated = ? WHERE id = ? AND state = ?",
            [state, time.time(), upload_id, expected],
        )

    async def finals_waiting_for(self, partial_id: str) -> list[str]:
        """Unassembled final uploads that list `partial_id` (an exact element match: a LIKE
        pattern would read `_` and `%` in ids as wildcards)."""
        rows = self._rows(
            "SELECT id FROM uploads WHERE is_final = 1 AND state = ? AND EXISTS"
            " (SELECT 1 FROM json_each(uploads.partials) WHERE value = ?)",
            [ACTIVE, partial_id],
        )
        return [row[0] for row in rows]

    async def expired_ids(self, now: float, limit: int = 1000) -> list[str]:
        """Active, unfinished uploads whose expiry has passed, longest expired first."""
        rows = self._rows(
            "SELECT id FROM uploads WHERE state = ? AND expires IS NOT NULL AND expires <= ?"
            ' AND (length IS NULL OR "offset" < length) ORDER BY expires LIMIT ?',
            [ACTIVE, now, limit],
        )
        return [row[0] for row in rows]

    async def finish_recorded(self, upload_id: str) -> None:
        """Clear the upload's pending finish (`updated` stays: it is the upload's, not the
        mark's)."""
        self._write(
            "UPDATE uploads SET finish_pending = 0 WHERE id = ? AND finish_pending = 1",
            [upload_id],
        )

    async def pending_finishes(self, older_than: float, limit: int = 100) -> list[str]:
        """Complete uploads whose finish is pending, not updated for `older_than` seconds."""
        rows = self._rows(
            "SELECT id FROM uploads WHERE finish_pending = 1 AND state = ? AND updated <= ?"
            " ORDER BY updated LIMIT ?",
            [COMPLETE, time.time() - older_than, limit],
        )
        return [row[0] for row in rows]

    async def prune_tombstones(self, now: float) -> int:
        """Forget terminated/expired uploads older than TOMBSTONE_SECONDS, and their parts."""
        old = "FROM uploads WHERE state IN (?, ?) AND updated < ?"
        params = [*GONE_STATES, now - TOMBSTONE_SECONDS]
        with self._session(write=True) as conn:
            conn.execute(f"DELETE FROM upload_parts WHERE upload_id IN (SELECT id {old})", params)
            return conn.execute(f"DELETE {old}", params).rowcount

    # -- store parts -------------------------------------------------------------------------

    async def reserve_part(self, upload_id: str) -> int:
        """The upload's next part number, from its counter: the increment and the read are one
        statement under the database's single write lock, so workers and threads sharing the
        file never get the same number. KeyError for an unknown upload."""
        with self._session(write=True) as conn:
            rows = conn.execute(
                "UPDATE uploads SET last_part = last_part + 1 WHERE id = ? RETURNING last_part",
                [upload_id],
            ).fetchall()  # every row: the statement is finished before the COMMIT
        if not rows:
            raise KeyError(upload_id)
        return int(rows[0][0])

    async def parts(self, upload_id: str) -> list[Part]:
        """The upload's parts in number order."""
        rows = self._rows(
            "SELECT number, etag, size, checksum FROM upload_parts WHERE upload_id = ?"
            " ORDER BY number",
            [upload_id],
        )
        return [Part(*row) for row in rows]

    async def drop_parts(self, upload_id: str) -> None:
        """Forget the upload's parts."""
        self._write("DELETE FROM upload_parts WHERE upload_id = ?", [upload_id])

    # -- durable hook deliveries -------------------------------------------------------------

    async def add_deliveries(
        self, deliveries: Sequence[NewDelivery], owner: str, lease: float
    ) -> list[int]:
        """Record deliveries, already claimed by `owner` (attempts 1); their ids in order."""
        now = time.time()
        with self._session(write=True) as conn:
            return [
                conn.execute(
                    "INSERT INTO hook_deliveries (event, target, upload_id, payload, state,"
                    " attempts, next_attempt, lease_until, owner, created, updated)"
                    " VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?) RETURNING id",
                    [
                        d.event,
                        d.target,
                        d.upload_id,
                        d.payload,
                        PENDING,
                        now,
                        now + lease,
                        owner,
                        now,
                        now,
                    ],
                ).fetchone()[0]
                for d in deliveries
            ]

    async def due_deliveries(
        self, *, dead_owners: Sequence[str] = (), everything: bool = False, limit: int = 100
    ) -> list[Delivery]:
        """Pending deliveries nobody holds whose retry time has come (or all, `everything`)."""
        now = time.time()
        rows = self._rows(
            f"SELECT {_DELIVERY_FIELDS} FROM hook_deliveries WHERE {_unheld(dead_owners)}"
            " AND (? OR next_attempt <= ?)"
            " ORDER BY next_attempt, id LIMIT ?",
            [now, *dead_owners, everything, now, limit],
        )
        return [Delivery(*row) for row in rows]

    async def claim_delivery(
        self, delivery_id: int, owner: str, lease: float, *, dead_owners: Sequence[str] = ()
    ) -> Delivery | None:
        """Take a delivery nobody holds for one attempt (attempts + 1); None if taken."""
        now = time.time()
        with self._session(write=True) as conn:
            rows = conn.execute(
                "UPDATE hook_deliveries SET lease_until = ?, owner = ?, attempts = attempts + 1,"
                f" updated = ? WHERE id = ? AND {_unheld(dead_owners)}"
                f" RETURNING {_DELIVERY_FIELDS}",
                [now + lease, owner, now, delivery_id, now, *dead_owners],
            ).fetchall()
        return Delivery(*rows[0]) if rows else None

    async def settle_delivery(
        self,
        delivery_id: int,
        attempt: int,
        state: str,
        *,
        retry_in: float | None = None,
        error: str | None = None,
    ) -> bool:
        """End attempt `attempt` and release the lease; False if claimed again since."""
        now = time.time()
        retry_at = None if retry_in is None else now + retry_in
        return self._cas(
            "UPDATE hook_deliveries SET state = ?, lease_until = NULL, owner = NULL,"
            " updated = ?, next_attempt = COALESCE(?, next_attempt),"
            " last_error = COALESCE(?, last_error)"
            " WHERE id = ? AND attempts = ? AND state = 'pending'",
            [state, now, retry_at, None if error is None else error[:2000], delivery_id, attempt],
        )

    async def delivery_owners(self) -> list[str]:
        """Owners holding unexpired leases on pending deliveries."""
        rows = self._rows(
            "SELECT DISTINCT owner FROM hook_deliveries WHERE state = 'pending'"
            " AND lease_until > ? AND owner IS NOT NULL",
            [time.time()],
        )
        return [row[0] for row in rows]

    async def has_delivery(self, upload_id: str, event: str) -> bool:
        """Whether `event` was already recorded for the upload."""
        return bool(
            self._rows(
                "SELECT 1 FROM hook_deliveries WHERE upload_id = ? AND event = ? LIMIT 1",
                [upload_id, event],
            )
        )

    async def deliveries(self, upload_id: str | None = None) -> list[Delivery]:
        """Recorded deliveries (all, or one upload's), oldest first."""
        sql = f"SELECT {_DELIVERY_FIELDS} FROM hook_deliveries"
        params: list[Any] = []
        if upload_id is not None:
            sql += " WHERE upload_id = ?"
            params.append(upload_id)
        return [Delivery(*row) for row in self._rows(sql + " ORDER BY id", params)]

    async def prune_deliveries(self, older_than: float) -> int:
        """Forget settled deliveries not touched for `older_than` seconds."""
        return self._write(
            "DELETE FROM hook_deliveries WHERE state IN ('done', 'failed') AND updated < ?",
            [time.time() - older_than],
        )

    # -- processing jobs ---------------------------------------------------------------------

    async def create_job(self, upload_id: str, plugins: list[str], size: int) -> bool:
        """Queue the processing job of an upload once; False if it already exists."""
        now = time.time()
        return self._cas(
            _NEW_JOB + " ON CONFLICT (id) DO NOTHING",
            [upload_id, json.dumps(plugins), size, now, now],
        )

    async def get_job(self, upload_id: str) -> Job | None:
        """The job, or None."""
        rows = self._rows(f"SELECT {_JOB_SELECT} FROM jobs WHERE id = ?", [upload_id])
        return _job_of(rows[0]) if rows else None

    async def claim_next_job(self, owner: str, lease: float) -> Job | None:
        """Claim the oldest queued job. One UPDATE picks and takes it: the IMMEDIATE
        transaction holds the database's only write lock, so no other worker can take the
        same row between the pick and the update (no compare-and-set retry loop needed).

        The new run starts with an empty report: the rows of earlier runs are queued for
        purging (not deleted here: there may be millions)."""
        now = time.time()
        with self._session(write=True) as conn:
            rows = conn.execute(
                "UPDATE jobs SET state = 'processing', owner = ?, lease_until = ?, started = ?,"
                " updated = ?, attempts = attempts + 1, run = COALESCE(run, 0) + 1,"
                " bytes_done = 0, records = 0, progress = NULL, error_count = 0"
                " WHERE id = (SELECT id FROM jobs WHERE state = 'queued'"
                f" ORDER BY created, rowid LIMIT 1) RETURNING {_JOB_SELECT}",
                [owner, now + lease, now, now],
            ).fetchall()
            if not rows:
                return None
            job = _job_of(rows[0])
            conn.execute(_PURGE_UPSERT, [job.id, job.run, job.id])
        return job

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
        now = time.time()
        return self._cas(
            "UPDATE jobs SET lease_until = ?, updated = ?, bytes_done = ?, records = ?,"
            " progress = ?, error_count = ? WHERE id = ? AND run = ? AND state = 'processing'",
            [
                now + lease,
                now,
                bytes_done,
                records,
                json.dumps(progress),
                error_count,
                upload_id,
                run,
            ],
        )

    async def add_job_errors(self, upload_id: str, run: int, rows: Sequence[NewJobError]) -> bool:
        """Append rows to run `run`'s report (in a worker thread: batches are large)."""
        return await anyio.to_thread.run_sync(self._add_job_errors, upload_id, run, rows)

    def _add_job_errors(self, upload_id: str, run: int, rows: Sequence[NewJobError]) -> bool:
        """Refused once the upload is gone: the job_errors_upload_gone trigger queued the purge
        when the state changed, so rows written after that would never be deleted."""
        with self._session(write=True) as conn:
            owned = conn.execute(
                "SELECT 1 FROM jobs WHERE id = ? AND run = ? AND state = 'processing' AND id IN"
                " (SELECT id FROM uploads WHERE state NOT IN (?, ?))",
                [upload_id, run, *GONE_STATES],
            ).fetchone()
            if owned is None:
                return False
            conn.executemany(
                "INSERT INTO job_errors (upload_id, run, plugin, line, kind, message, excerpt)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(upload_id, run, *row) for row in rows],
            )
            return True

    async def job_errors_page(
        self, upload_id: str, run: int, after: tuple[int, int] = (-1, -1), limit: int = 1000
    ) -> list[JobErrorRow]:
        """The next rows of a run's report after the (line, seq) key of the last row read:
        pages stay cheap however deep the report goes (keyset, not OFFSET)."""
        rows = await anyio.to_thread.run_sync(
            self._rows,
            "SELECT line, seq, plugin, kind, message, excerpt FROM job_errors"
            " WHERE upload_id = ? AND run = ? AND (line, seq) > (?, ?)"
            " ORDER BY line, seq LIMIT ?",
            [upload_id, run, *after, limit],
        )
        return [JobErrorRow(*row) for row in rows]

    async def purge_job_errors(self, limit: int = 5000) -> bool:
        """Delete up to `limit` queued report rows (in a worker thread); True if there was
        something to do (call again)."""
        return await anyio.to_thread.run_sync(self._purge_job_errors, limit)

    def _purge_job_errors(self, limit: int) -> bool:
        """A plain read first: no write transaction when nothing is queued (the common case,
        polled by every worker)."""
        if not self._rows("SELECT 1 FROM job_errors_purge LIMIT 1"):
            return False
        with self._session(write=True) as conn:
            queued = conn.execute("SELECT upload_id, below_run FROM job_errors_purge LIMIT 1")
            purge = queued.fetchone()
            if purge is None:
                return False
            cur = conn.execute(
                "DELETE FROM job_errors WHERE seq IN (SELECT seq FROM job_errors"
                " WHERE upload_id = ? AND run < ? LIMIT ?)",
                [*purge, limit],
            )
            if cur.rowcount < limit:
                conn.execute(
                    "DELETE FROM job_errors_purge WHERE upload_id = ? AND below_run = ?", purge
                )
            return True

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
        now = time.time()
        return self._cas(
            "UPDATE jobs SET state = ?, result = ?, error = ?, finished = ?, updated = ?,"
            " lease_until = NULL, bytes_done = ?, records = ?, error_count = ?"
            " WHERE id = ? AND run = ? AND state = 'processing'",
            [
                state,
                json.dumps(result),
                error,
                now,
                now,
                bytes_done,
                records,
                error_count,
                upload_id,
                run,
            ],
        )

    async def requeue_job(self, upload_id: str, run: int, *, refund: bool = False) -> bool:
        """processing -> queued for a graceful stop of run `run`; `refund` takes the run off
        `attempts`."""
        return self._cas(
            "UPDATE jobs SET state = 'queued', owner = NULL, lease_until = NULL, updated = ?,"
            " attempts = attempts - ? WHERE id = ? AND run = ? AND state = 'processing'",
            [time.time(), int(refund), upload_id, run],
        )

    async def requeue_lapsed_jobs(self, dead_owners: Sequence[str] = ()) -> list[str]:
        """processing -> queued for jobs whose lease lapsed (or that have none: claimed by a
        version before leases) or whose owner is dead. One UPDATE: one caller per job."""
        now = time.time()
        with self._session(write=True) as conn:
            rows = conn.execute(
                "UPDATE jobs SET state = 'queued', owner = NULL, lease_until = NULL, updated = ?"
                " WHERE state = 'processing' AND (lease_until IS NULL OR lease_until <= ?"
                f" OR owner IN ({_marks(dead_owners)})) RETURNING id",
                [now, now, *dead_owners],
            ).fetchall()
        return [row[0] for row in rows]

    async def job_owners(self) -> list[str]:
        """Owners of processing jobs."""
        rows = self._rows(
            "SELECT DISTINCT owner FROM jobs WHERE state = 'processing' AND owner IS NOT NULL"
        )
        return [row[0] for row in rows]

    async def prune_jobs(self) -> int:
        """Forget jobs whose upload was terminated, expired or pruned (nobody can ask); their
        report rows, if any are left, are queued for purging."""
        gone = (
            "FROM jobs WHERE state IN ('completed', 'failed', 'queued') AND id NOT IN"
            " (SELECT id FROM uploads WHERE state NOT IN (?, ?))"
        )
        with self._session(write=True) as conn:
            conn.execute(
                f"INSERT INTO job_errors_purge (upload_id, below_run) SELECT id, {_ALL_RUNS}"
                f" {gone} AND EXISTS (SELECT 1 FROM job_errors WHERE upload_id = jobs.id)"
                " ON CONFLICT (upload_id) DO UPDATE SET below_run = excluded.below_run",
                list(GONE_STATES),
            )
            return conn.execute(f"DELETE {gone}", list(GONE_STATES)).rowcount

    async def job_counts(self) -> dict[str, int]:
        """Number of jobs per state."""
        rows = self._rows("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        return {state: count for state, count in rows}

    async def restart_job(self, upload_id: str, plugins: list[str], size: int) -> bool:
        """Queue an ended job again, or a new one: one upsert whose update applies only to a
        completed or failed job, so of racing callers exactly one queues the run (the others
        find it queued); a queued or processing job is left alone."""
        now = time.time()
        return self._cas(_RESTART_JOB, [upload_id, json.dumps(plugins), size, now, now])

    # -- listing -----------------------------------------------------------------------------

    async def list_uploads(
        self,
        where: UploadFilter = UploadFilter(),  # noqa: B008 - frozen, as in Registry
        *,
        limit: int = 50,
        before: tuple[float, str] | None = None,
    ) -> list[tuple[UploadInfo, Job | None]]:
        """Uploads matching `where` with their job, newest first, from the (created, id)
        index: the job of each is found by its key, never by a scan of the jobs."""
        condition, params = _upload_filter(where, before)
        rows = await anyio.to_thread.run_sync(
            self._rows,
            f"{_LIST_SELECT}{condition} ORDER BY uploads.created DESC, uploads.id DESC LIMIT ?",
            [*params, limit],
        )
        return [_listed(row) for row in rows]

    async def upload_stats(self, active_since: float) -> UploadStats:
        """Totals from one pass over the uploads (per state: count, bytes, in flight), and the
        job counts."""
        rows = await anyio.to_thread.run_sync(self._rows, _UPLOAD_TOTALS, [active_since])
        return UploadStats(
            by_state={state: count for state, count, _, _ in rows},
            bytes_stored=sum(stored for state, _, stored, _ in rows if state in (ACTIVE, COMPLETE)),
            in_flight=sum(moving for state, _, _, moving in rows if state == ACTIVE),
            jobs=await self.job_counts(),
        )
