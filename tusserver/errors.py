"""Backend failures that map to one tus answer each, at one boundary (app.py).

Backends raise these instead of their driver's exceptions, so core, handlers, hooks and
processing never look at sqlite3, asyncpg or an S3 client's error types, and an answer is
never decided by matching message text.
"""

from __future__ import annotations


class BackendUnavailable(Exception):
    """A shared backend (registry, coordination, store service) cannot be reached right now.

    Answered `503` with `Retry-After`: nothing was lost, the client resumes from the recorded
    offset once the backend is back (tus clients retry 5xx answers).
    """

    def __init__(self, message: str, retry_after: int = 2):
        super().__init__(message)
        self.retry_after = retry_after


class AlreadyExists(Exception):
    """An upload with this id exists already (an id chosen by a pre-create hook): 409."""


class StoreFull(OSError):
    """The store has no room for more bytes (ENOSPC, a quota, the configured reserve): 507."""
