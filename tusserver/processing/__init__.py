"""Post-finish processing: plugins (validate, csv, your own) run on finished uploads as
durable jobs, with live progress on `{base}{id}/status` and `{base}{id}/events` (SSE).

`attach(core)` wires it into a core (called by create_app); see jobs.py for the job life
cycle, plugin.py for the plugin interface, csvscan.py for the streaming CSV scanner,
encoding.py for the encoding detection both built-ins share and report.py for the
downloadable error report ({base}{id}/errors.csv, .ndjson).
"""

from tusserver.processing.jobs import JobRunner, attach, load_plugins, select_plugins
from tusserver.processing.plugin import Context, ErrorSink, Plugin, PluginFailed
from tusserver.processing.report import handle_errors_csv, handle_errors_ndjson
from tusserver.processing.status import handle_events, handle_status, status_of

__all__ = [
    "Context",
    "ErrorSink",
    "JobRunner",
    "Plugin",
    "PluginFailed",
    "attach",
    "handle_errors_csv",
    "handle_errors_ndjson",
    "handle_events",
    "handle_status",
    "load_plugins",
    "select_plugins",
    "status_of",
]
