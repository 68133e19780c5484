"""The processing plugin interface: start -> feed(chunk)* -> finish() -> result.

The runner reads a finished upload once, as a stream, and feeds every selected plugin from
that single pass, so adding a plugin costs CPU but never another read of a multi-GB file.
Plugins run in a worker thread (never on the event loop) and must keep their memory bounded:
`feed` sees each chunk once and must not keep references to all of them.

A result is a JSON-able dict. The runner adds `status`:
- "ok"      the file passed,
- "errors"  the file was processed but has problems (e.g. malformed CSV rows),
- "failed"  the file cannot be processed (e.g. not a CSV at all) -> the job fails.
A plugin reports failure by raising PluginFailed (with a clear message) or by returning
{"status": "failed", "error": "...", "line": n}; any other exception also fails the job, with
its text. Messages carry no line number: the line is its own field, printed once as "line n: ".

Problem rows (every one, not a sample) go to the job's downloadable error report through
`Plugin.report`, which the runner writes to the registry in batches, so memory stays constant
however many rows are bad.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tusserver.config import Settings

MAX_MESSAGE = 500  # characters of a reported row's message
MAX_EXCERPT = 200  # characters of the raw row kept in the report (rows can be megabytes)

# One reported row: (plugin, line or 0, kind, message, excerpt).
RowError = tuple[str, int, str, str, str]


class PluginFailed(Exception):
    """The file cannot be processed by this plugin; the message is shown to users.

    The message should not contain the line number: `line` holds it, and the printed form
    (`with_line`) adds it once.
    """

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.line = line


def with_line(message: str, line: int | None) -> str:
    """The printed form of a message and its line: "line 5: wrong ..." (line added once)."""
    return f"line {line}: {message}" if line else message


class ErrorSink:
    """Collects the problem rows of one job run; this base only counts them (tests, plugins
    used outside the runner). Thread-safe: every plugin feeds from its own thread."""

    def __init__(self) -> None:
        self.total = 0
        self._lock = threading.Lock()

    def add(self, row: RowError) -> None:
        with self._lock:
            self.total += 1

    def flush(self) -> None:
        """Write out what is buffered (the runner calls it periodically and at the end)."""


@dataclass
class Context:
    """What a plugin knows about the upload it processes."""

    upload_id: str
    size: int
    metadata: dict[str, str] = field(default_factory=dict)
    settings: Settings = field(default_factory=Settings)
    # True once the job is being stopped (shutdown): long-running steps should return early
    cancelled: Callable[[], bool] = field(default=lambda: False)
    # where Plugin.report sends problem rows (the runner's writes them to the registry)
    errors: ErrorSink = field(default_factory=ErrorSink)


class Plugin:
    """Base class of processing plugins. Subclass, set `name`, override the three steps.

    One instance processes one file. `progress()` is polled from another thread while the
    plugin runs, so it must only read simple attributes.
    """

    name: ClassVar[str] = ""

    def start(self, ctx: Context) -> None:
        """Called once before the first chunk."""
        self.ctx = ctx

    def feed(self, chunk: bytes) -> None:
        """Called with consecutive pieces of the file, in order."""

    def finish(self) -> dict[str, Any]:
        """Called once after the last chunk; returns the plugin's result."""
        return {}

    def progress(self) -> dict[str, Any]:
        """Live counters shown on /status while the job runs (e.g. records so far)."""
        return {}

    def report(self, line: int | None, kind: str, message: str, excerpt: str = "") -> None:
        """Record one problem row for the job's error report (errors.csv / errors.ndjson).

        `message` has no line number (`line` is its own column); `excerpt` is a piece of the
        raw row, cut to MAX_EXCERPT characters. Call it for every bad row, not just the first
        few: the sink counts and batches them, and memory stays constant.
        """
        excerpt = excerpt[:MAX_EXCERPT].replace("\0", "\\x00")
        self.ctx.errors.add((self.name, line or 0, kind, message[:MAX_MESSAGE], excerpt))
