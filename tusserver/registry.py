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
from collections.abc import Iterator
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
    def deferred(self) -> bool:
        """Length not known yet (creation-defer-length)."""
        return self.length is None

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

    def close(self) -> None:
        """Close the connection (tests and shutdown)."""
        with self._lock:
            self.db.conn.close()

    def create(self, info: UploadInfo) -> None:
        """Record a new upload."""
        with self.transaction():
            self.db.table("uploads").insert(info.to_row())

    def get(self, upload_id: str) -> UploadInfo | None:
        """The upload's info, or None if the id was never created."""
        with self._lock:
            rows = list(self.db.query("SELECT * FROM uploads WHERE id = ?", [upload_id]))
        return UploadInfo.from_row(rows[0]) if rows else None

    def update(self, upload_id: str, **values: Any) -> None:
        """Set some columns of one upload; `updated` is stamped automatically."""
        values.setdefault("updated", time.time())
        for key in ("metadata", "partials"):
            if key in values and not isinstance(values[key], str):
                values[key] = json.dumps(values[key])
        with self.transaction():
            self.db.table("uploads").update(upload_id, values)

    def set_state_if(self, upload_id: str, expected: str, state: str) -> bool:
        """Compare-and-set of the state; True if this call made the change (one worker wins)."""
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE uploads SET state = ?, updated = ? WHERE id = ? AND state = ?",
                [state, time.time(), upload_id, expected],
            )
            return cur.rowcount == 1

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
