"""The upload registry: every upload's info, offset, expiry and state, in SQLite.

Upload info lives only here (the store keeps bare data files), so one place answers "what is
the offset of X" for every worker process. WAL mode lets readers run beside the single writer;
each call is one short transaction, and a busy timeout absorbs contention between workers.
The offset written here is the durability promise: the store has already fsynced those bytes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlite_utils import Database

ACTIVE = "active"
COMPLETE = "complete"
TERMINATED = "terminated"
EXPIRED = "expired"
GONE_STATES = (TERMINATED, EXPIRED)

# How long tombstones of terminated/expired uploads are kept so their URLs answer 410.
TOMBSTONE_SECONDS = 7 * 86400


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

    @property
    def finished(self) -> bool:
        """All bytes received."""
        return self.length is not None and self.offset == self.length

    def expired_at(self, now: float) -> bool:
        """An unfinished upload past its Upload-Expires."""
        return self.expires is not None and not self.finished and self.expires <= now

    def to_row(self) -> dict[str, Any]:
        """Row form for SQLite (lists and dicts as JSON)."""
        return {
            "id": self.id,
            "length": self.length,
            "offset": self.offset,
            "metadata_raw": self.metadata_raw,
            "metadata": json.dumps(self.metadata),
            "created": self.created,
            "updated": self.updated,
            "expires": self.expires,
            "state": self.state,
            "concat": self.concat,
            "is_partial": int(self.is_partial),
            "is_final": int(self.is_final),
            "partials": json.dumps(self.partials),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> UploadInfo:
        """Inverse of to_row."""
        return cls(
            id=row["id"],
            length=row["length"],
            offset=row["offset"],
            metadata_raw=row["metadata_raw"],
            metadata=json.loads(row["metadata"] or "{}"),
            created=row["created"],
            updated=row["updated"],
            expires=row["expires"],
            state=row["state"],
            concat=row["concat"],
            is_partial=bool(row["is_partial"]),
            is_final=bool(row["is_final"]),
            partials=json.loads(row["partials"] or "[]"),
        )


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
# or given up, so a crash or restart never loses one (see tusserver.hooks.dispatch).
HOOK_DELIVERY_COLUMNS: dict[str, Any] = {
    "id": int,
    "event": str,
    "target": str,
    "upload_id": str,
    "payload": str,
    "state": str,  # pending, done, failed
    "attempts": int,
    "next_attempt": float,
    "lease_until": float,  # a worker is delivering it until then
    "owner": str,  # which process holds the lease (tusserver.hooks.dispatch: liveness lock)
    "last_error": str,
    "created": float,
    "updated": float,
}


# Post-finish processing jobs (see tusserver.processing.jobs): one row per upload, claimed by
# exactly one worker with a compare-and-set on `state`, kept alive by `heartbeat`.
JOB_COLUMNS: dict[str, Any] = {
    "id": str,  # the upload id
    "state": str,  # queued, processing, completed, failed
    "plugins": str,  # JSON list of plugin names
    "size": int,
    "owner": str,  # host:pid of the worker processing it
    "heartbeat": float,
    "attempts": int,
    "run": int,  # +1 on every claim (never refunded): tags the run's job_errors rows
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
# in batches while the job runs, so every instance sharing the database can serve it. Rows of
# an older run, or of an upload that was terminated or expired, are queued in job_errors_purge
# (by claim_job, or by a trigger on the uploads table: no code path can forget it) and deleted
# in small batches by the processing workers: millions of rows never stall one transaction.
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
_ALL_RUNS = 9223372036854775807  # below_run that purges every run of an upload
_PURGE_UPSERT = (
    "INSERT INTO job_errors_purge (upload_id, below_run) SELECT ?, ? WHERE EXISTS"
    " (SELECT 1 FROM job_errors WHERE upload_id = ?) ON CONFLICT (upload_id)"
    " DO UPDATE SET below_run = max(below_run, excluded.below_run)"
)


def _column(name: str) -> str:
    """A known column name (names are interpolated into SQL, values never are)."""
    if not name.isidentifier():
        raise ValueError(f"invalid column name {name!r}")
    return name


class Registry:
    """SQLite-backed registry shared by all worker processes."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            str(path), timeout=30.0, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        self.db = Database(conn)
        self._lock = threading.Lock()
        self._migrate()

    def _migrate(self) -> None:
        """Create tables and indexes if missing (idempotent, safe when workers race)."""
        with self.transaction():
            uploads = self.db.table("uploads")
            if not uploads.exists():
                uploads.create(UPLOAD_COLUMNS, pk="id", not_null={"state"})
                uploads.create_index(["state", "expires"])
            # finals_waiting_for runs whenever a partial upload completes
            uploads.create_index(["is_final", "state"], if_not_exists=True)
            jobs = self.db.table("jobs")
            if not jobs.exists():
                jobs.create(JOB_COLUMNS, pk="id", not_null={"state"})
                jobs.create_index(["state", "created"])
            for name in ("run", "error_count"):  # tables from before the columns existed
                if name not in jobs.columns_dict:
                    jobs.add_column(name, int)
            for statement in JOB_ERRORS_SCHEMA:
                self.db.conn.execute(statement)
            deliveries = self.db.table("hook_deliveries")
            if not deliveries.exists():
                deliveries.create(HOOK_DELIVERY_COLUMNS, pk="id", not_null={"state"})
                deliveries.create_index(["state", "next_attempt"])
            deliveries.create_index(["upload_id", "event"], if_not_exists=True)
            if "owner" not in deliveries.columns_dict:  # tables from before the column existed
                deliveries.add_column("owner", str)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: the write lock is taken up front, so no upgrade deadlock."""
        with self._lock:
            conn = self.db.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def ping(self) -> None:
        """One trivial query; raises if the database cannot be read (health check)."""
        with self._lock:
            self.db.conn.execute("SELECT count(*) FROM uploads WHERE id = ''").fetchone()

    def close(self) -> None:
        """Close the connection (tests and shutdown)."""
        with self._lock:
            self.db.conn.close()

    # create/get/update run several times per request: plain SQL on the connection, because
    # sqlite-utils' Table.insert/update re-read the schema (PRAGMA) and the row on every call,
    # which measured as ~30% of the event loop's time in the small-uploads benchmark.

    def create(self, info: UploadInfo) -> None:
        """Record a new upload."""
        row = info.to_row()
        names = ", ".join(f'"{_column(name)}"' for name in row)
        marks = ", ".join("?" for _ in row)
        with self.transaction() as conn:
            conn.execute(f"INSERT INTO uploads ({names}) VALUES ({marks})", list(row.values()))

    def get(self, upload_id: str) -> UploadInfo | None:
        """The upload's info, or None if the id was never created."""
        with self._lock:
            cur = self.db.conn.execute("SELECT * FROM uploads WHERE id = ?", [upload_id])
            row = cur.fetchone()
            if row is None:
                return None
            names = [d[0] for d in cur.description]
        return UploadInfo.from_row(dict(zip(names, row, strict=True)))

    def update(self, upload_id: str, **values: Any) -> None:
        """Set some columns of one upload; `updated` is stamped automatically."""
        values.setdefault("updated", time.time())
        for key in ("metadata", "partials"):
            if key in values and not isinstance(values[key], str):
                values[key] = json.dumps(values[key])
        assignments = ", ".join(f'"{_column(name)}" = ?' for name in values)
        with self.transaction() as conn:
            conn.execute(
                f"UPDATE uploads SET {assignments} WHERE id = ?", [*values.values(), upload_id]
            )

    def set_state_if(self, upload_id: str, expected: str, state: str) -> bool:
        """Compare-and-set of the state; True if this call made the change (one worker wins)."""
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE uploads SET state = ?, updated = ? WHERE id = ? AND state = ?",
                [state, time.time(), upload_id, expected],
            )
            return cur.rowcount == 1

    def finals_waiting_for(self, partial_id: str) -> list[str]:
        """Unassembled final uploads that list `partial_id` (concatenation-unfinished)."""
        with self._lock:
            rows = self.db.query(
                "SELECT id FROM uploads WHERE is_final = 1 AND state = ? AND partials LIKE ?",
                [ACTIVE, f'%"{partial_id}"%'],
            )
            return [row["id"] for row in rows]

    def expired_ids(self, now: float) -> list[str]:
        """Active, unfinished uploads whose expiry has passed."""
        with self._lock:
            rows = self.db.query(
                "SELECT id FROM uploads WHERE state = ? AND expires IS NOT NULL AND expires <= ?"
                " AND (length IS NULL OR offset < length)",
                [ACTIVE, now],
            )
            return [row["id"] for row in rows]

    def prune_tombstones(self, now: float) -> int:
        """Forget terminated/expired uploads old enough that nobody will ask again."""
        with self.transaction() as conn:
            cur = conn.execute(
                "DELETE FROM uploads WHERE state IN (?, ?) AND updated < ?",
                [*GONE_STATES, now - TOMBSTONE_SECONDS],
            )
            return cur.rowcount

    # -- durable hook deliveries -------------------------------------------------------------

    def add_deliveries(self, rows: list[dict[str, Any]]) -> list[int]:
        """Record hook deliveries; returns their ids in order."""
        ids = []
        with self.transaction():
            table = self.db.table("hook_deliveries")
            for row in rows:
                table.insert(row)
                ids.append(int(table.last_rowid or 0))
        return ids

    def due_deliveries(
        self, now: float, *, ignore_schedule: bool = False, dead_owners: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """Pending deliveries nobody holds (no lease, an expired one, or a dead owner's); with
        ignore_schedule also those still backing off."""
        marks = ",".join("?" * len(dead_owners)) or "NULL"
        with self._lock:
            rows = self.db.query(
                "SELECT id, event, target FROM hook_deliveries WHERE state = 'pending'"
                f" AND (lease_until IS NULL OR lease_until <= ? OR owner IN ({marks}))"
                " AND (? OR next_attempt <= ?) ORDER BY next_attempt LIMIT 100",
                [now, *dead_owners, int(ignore_schedule), now],
            )
            return list(rows)

    def delivery_owners(self, now: float) -> list[str]:
        """Processes holding unexpired leases on pending deliveries."""
        with self._lock:
            rows = self.db.query(
                "SELECT DISTINCT owner FROM hook_deliveries WHERE state = 'pending'"
                " AND lease_until > ? AND owner IS NOT NULL",
                [now],
            )
            return [row["owner"] for row in rows]

    def claim_delivery(
        self,
        delivery_id: int,
        now: float,
        lease: float,
        owner: str = "",
        dead_owners: Sequence[str] = (),
    ) -> dict[str, Any] | None:
        """Take a pending delivery for one attempt (one worker wins); its row, or None."""
        marks = ",".join("?" * len(dead_owners)) or "NULL"
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE hook_deliveries SET lease_until = ?, owner = ?, attempts = attempts + 1,"
                " updated = ? WHERE id = ? AND state = 'pending'"
                f" AND (lease_until IS NULL OR lease_until <= ? OR owner IN ({marks}))",
                [now + lease, owner, now, delivery_id, now, *dead_owners],
            )
            if cur.rowcount != 1:
                return None
            rows = list(self.db.query("SELECT * FROM hook_deliveries WHERE id = ?", [delivery_id]))
        return rows[0] if rows else None

    def settle_delivery(
        self,
        delivery_id: int,
        state: str,
        *,
        next_attempt: float | None = None,
        error: str | None = None,
    ) -> None:
        """End an attempt: done, failed (given up) or pending again (retried at next_attempt)."""
        values: dict[str, Any] = {"state": state, "lease_until": None, "updated": time.time()}
        if next_attempt is not None:
            values["next_attempt"] = next_attempt
        if error is not None:
            values["last_error"] = error[:2000]
        with self.transaction():
            self.db.table("hook_deliveries").update(delivery_id, values)

    def has_delivery(self, upload_id: str, event: str) -> bool:
        """Whether `event` was already recorded for the upload (keeps post-finish once-only)."""
        with self._lock:
            rows = self.db.query(
                "SELECT 1 FROM hook_deliveries WHERE upload_id = ? AND event = ? LIMIT 1",
                [upload_id, event],
            )
            return any(True for _ in rows)

    def deliveries(self, upload_id: str | None = None) -> list[dict[str, Any]]:
        """Recorded deliveries (all, or one upload's), oldest first: for operators and tests."""
        sql = "SELECT * FROM hook_deliveries"
        params: list[Any] = []
        if upload_id is not None:
            sql += " WHERE upload_id = ?"
            params.append(upload_id)
        with self._lock:
            return list(self.db.query(sql + " ORDER BY id", params))

    def prune_deliveries(self, before: float) -> int:
        """Forget settled deliveries last touched before `before`."""
        with self.transaction() as conn:
            cur = conn.execute(
                "DELETE FROM hook_deliveries WHERE state IN ('done', 'failed') AND updated < ?",
                [before],
            )
            return cur.rowcount

    # -- processing jobs ---------------------------------------------------------------------

    def create_job(self, upload_id: str, plugins: list[str], size: int) -> bool:
        """Queue the processing job of an upload once; False if it already exists."""
        now = time.time()
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO jobs (id, state, plugins, size, attempts, bytes_done,"
                " records, created, updated) VALUES (?, 'queued', ?, ?, 0, 0, 0, ?, ?)",
                [upload_id, json.dumps(plugins), size, now, now],
            )
            return cur.rowcount == 1

    def get_job(self, upload_id: str) -> dict[str, Any] | None:
        """The job row (JSON columns decoded), or None."""
        with self._lock:
            rows = list(self.db.query("SELECT * FROM jobs WHERE id = ?", [upload_id]))
        if not rows:
            return None
        row = rows[0]
        for key in ("plugins", "progress", "result"):
            row[key] = json.loads(row[key]) if row[key] else None
        return row

    def queued_jobs(self, limit: int = 10) -> list[str]:
        """Oldest queued jobs first."""
        with self._lock:
            rows = self.db.query(
                "SELECT id FROM jobs WHERE state = 'queued' ORDER BY created LIMIT ?", [limit]
            )
            return [row["id"] for row in rows]

    def claim_job(self, upload_id: str, owner: str) -> bool:
        """Compare-and-set queued -> processing: exactly one worker (of any process) wins.

        The new run starts with an empty error report; the rows of earlier runs are queued
        for purging (not deleted here: there may be millions)."""
        now = time.time()
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE jobs SET state = 'processing', owner = ?, heartbeat = ?, started = ?,"
                " updated = ?, attempts = attempts + 1, bytes_done = 0, records = 0,"
                " progress = NULL, run = COALESCE(run, 0) + 1, error_count = 0"
                " WHERE id = ? AND state = 'queued'",
                [owner, now, now, now, upload_id],
            )
            if cur.rowcount != 1:
                return False
            (run,) = conn.execute("SELECT run FROM jobs WHERE id = ?", [upload_id]).fetchone()
            conn.execute(_PURGE_UPSERT, [upload_id, run, upload_id])
            return True

    def job_progress(
        self,
        upload_id: str,
        owner: str,
        bytes_done: int,
        records: int,
        progress: dict[str, Any],
        error_count: int = 0,
    ) -> bool:
        """Heartbeat with progress; False if this worker no longer owns the job."""
        now = time.time()
        values = [now, now, bytes_done, records, json.dumps(progress), error_count]
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE jobs SET heartbeat = ?, updated = ?, bytes_done = ?, records = ?,"
                " progress = ?, error_count = ? WHERE id = ? AND owner = ?"
                " AND state = 'processing'",
                [*values, upload_id, owner],
            )
            return cur.rowcount == 1

    def add_job_errors(
        self, upload_id: str, owner: str, run: int, rows: Sequence[tuple[str, int, str, str, str]]
    ) -> bool:
        """Append (plugin, line, kind, message, excerpt) rows to the run's error report, if
        `owner` still runs it (a worker that lost the job cannot mix rows into the new run)
        and the upload is not gone: the job_errors_upload_gone trigger queues the purge once,
        when the state changes, so rows written after that would never be deleted."""
        with self.transaction() as conn:
            owned = conn.execute(
                "SELECT 1 FROM jobs WHERE id = ? AND owner = ? AND run = ?"
                " AND state = 'processing' AND id IN"
                " (SELECT id FROM uploads WHERE state NOT IN (?, ?))",
                [upload_id, owner, run, *GONE_STATES],
            ).fetchone()
            if owned is None:
                return False
            conn.executemany(
                "INSERT INTO job_errors (upload_id, run, plugin, line, kind, message, excerpt)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(upload_id, run, *row) for row in rows],
            )
            return True

    def job_errors_page(
        self, upload_id: str, run: int, after: tuple[int, int] = (-1, -1), limit: int = 1000
    ) -> list[tuple[int, int, str, str, str, str]]:
        """The next `limit` rows (line, seq, plugin, kind, message, excerpt) of a run's error
        report in line order, after the (line, seq) key of the last row read: pages stay
        cheap however deep the report goes (keyset, not OFFSET)."""
        with self._lock:
            cur = self.db.conn.execute(
                "SELECT line, seq, plugin, kind, message, excerpt FROM job_errors"
                " WHERE upload_id = ? AND run = ? AND (line, seq) > (?, ?)"
                " ORDER BY line, seq LIMIT ?",
                [upload_id, run, *after, limit],
            )
            return cur.fetchall()

    def purge_job_errors(self, limit: int = 5000) -> bool:
        """Delete up to `limit` report rows queued for purging (older runs, uploads that are
        gone); True if there was something to do (call again). A plain read first: no write
        transaction when nothing is queued (the common case, polled by every worker)."""
        with self._lock:
            row = self.db.conn.execute("SELECT 1 FROM job_errors_purge LIMIT 1")
            if row.fetchone() is None:
                return False
        with self.transaction() as conn:
            row = conn.execute("SELECT upload_id, below_run FROM job_errors_purge LIMIT 1")
            queued = row.fetchone()
            if queued is None:
                return False
            cur = conn.execute(
                "DELETE FROM job_errors WHERE seq IN (SELECT seq FROM job_errors"
                " WHERE upload_id = ? AND run < ? LIMIT ?)",
                [*queued, limit],
            )
            if cur.rowcount < limit:
                conn.execute(
                    "DELETE FROM job_errors_purge WHERE upload_id = ? AND below_run = ?", queued
                )
            return True

    def finish_job(
        self,
        upload_id: str,
        owner: str,
        state: str,
        result: dict[str, Any],
        error: str | None,
        bytes_done: int,
        records: int,
        error_count: int = 0,
    ) -> bool:
        """processing -> completed/failed with the results, if still owned by `owner`."""
        now = time.time()
        values = [state, json.dumps(result), error, now, now, now, bytes_done, records]
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE jobs SET state = ?, result = ?, error = ?, finished = ?, updated = ?,"
                " heartbeat = ?, bytes_done = ?, records = ?, error_count = ? WHERE id = ?"
                " AND owner = ? AND state = 'processing'",
                [*values, error_count, upload_id, owner],
            )
            return cur.rowcount == 1

    def processing_jobs(self) -> list[dict[str, Any]]:
        """Jobs some worker claims to be processing (for crash recovery)."""
        with self._lock:
            return list(
                self.db.query("SELECT id, owner, heartbeat FROM jobs WHERE state = 'processing'")
            )

    def requeue_job(self, upload_id: str, owner: str, *, refund: bool = False) -> bool:
        """processing -> queued (its worker died or is shutting down); CAS on the owner.

        `refund` (graceful shutdown) takes the interrupted run off `attempts`, which then
        counts only runs that ended by finishing or crashing (the crash-loop limit)."""
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE jobs SET state = 'queued', owner = NULL, updated = ?,"
                " attempts = attempts - ? WHERE id = ? AND owner = ? AND state = 'processing'",
                [time.time(), int(refund), upload_id, owner],
            )
            return cur.rowcount == 1

    def prune_jobs(self) -> int:
        """Forget jobs whose upload was terminated, expired or pruned (nobody can ask); their
        report rows, if any are left, are queued for purging."""
        gone = (
            "FROM jobs WHERE state IN ('completed', 'failed', 'queued') AND id NOT IN"
            " (SELECT id FROM uploads WHERE state NOT IN (?, ?))"
        )
        with self.transaction() as conn:
            conn.execute(
                f"INSERT INTO job_errors_purge (upload_id, below_run) SELECT id, {_ALL_RUNS}"
                f" {gone} AND EXISTS (SELECT 1 FROM job_errors WHERE upload_id = jobs.id)"
                " ON CONFLICT (upload_id) DO UPDATE SET below_run = excluded.below_run",
                list(GONE_STATES),
            )
            cur = conn.execute(f"DELETE {gone}", list(GONE_STATES))
            return cur.rowcount

    def job_counts(self) -> dict[str, int]:
        """Number of jobs per state."""
        with self._lock:
            rows = self.db.query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
            return {row["state"]: row["n"] for row in rows}
