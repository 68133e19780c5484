"""Logging setup: plain text or one JSON object per line (--log-format json).

Two kinds of structured lines carry their fields as `extra` attributes, so both formats show
them: one per request (logger `tusserver.access`, from the request middleware in app.py) and
one per upload event (logger `tusserver.events`: created, finished, terminated, expired).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

ACCESS = logging.getLogger("tusserver.access")
EVENTS = logging.getLogger("tusserver.events")

# Attributes every LogRecord has; anything else was passed as `extra` and is a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_STANDARD.add("color_message")  # uvicorn's ANSI-coloured copy of the message


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a record carries (its `extra`)."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """{"ts": ..., "level": ..., "logger": ..., "msg": ..., <fields>} on one line."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **fields_of(record),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class TextFormatter(logging.Formatter):
    """The classic line, with structured fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = fields_of(record)
        if extra:
            line += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        return line


def setup_logging(level: str, fmt: str) -> None:
    """Configure the root logger (uvicorn's loggers propagate to it)."""
    if fmt not in ("text", "json"):
        raise SystemExit(f"tusserver: invalid --log-format {fmt!r} (use text or json)")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def uvicorn_log_config(level: str, fmt: str) -> dict[str, Any]:
    """dictConfig for uvicorn (applied in every worker process): everything goes to one
    stderr handler on the root logger with our formatter, uvicorn's loggers included."""
    formatter = "tusserver.logs.JsonFormatter" if fmt == "json" else "tusserver.logs.TextFormatter"
    passthrough = {"handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"tus": {"()": formatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "tus",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "uvicorn": passthrough,
            "uvicorn.error": passthrough,
            "uvicorn.access": passthrough,
        },
    }


def upload_event(event: str, upload_id: str, **fields: Any) -> None:
    """One line per upload event."""
    extra = {"event": event, "upload": upload_id, **fields}
    EVENTS.info("upload %s %s", upload_id, event, extra=extra)


def access(method: str, path: str, status: int, seconds: float, client: str | None) -> None:
    """One line per request."""
    ACCESS.info(
        "%s %s %d %.1fms",
        method,
        path,
        status,
        seconds * 1000,
        extra={
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
            "client": client,
        },
    )
