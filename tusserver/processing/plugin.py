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
{"status": "failed", "error": "..."}; any other exception also fails the job, with its text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tusserver.config import Settings


class PluginFailed(Exception):
    """The file cannot be processed by this plugin; the message is shown to users."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass
class Context:
    """What a plugin knows about the upload it processes."""

    upload_id: str
    size: int
    metadata: dict[str, str] = field(default_factory=dict)
    settings: Settings = field(default_factory=Settings)
    # True once the job is being stopped (shutdown): long-running steps should return early
    cancelled: Callable[[], bool] = field(default=lambda: False)


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
