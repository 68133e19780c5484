"""Checks before serving, and the start-up banner.

`validate(settings)` finds every mistake in a configuration at once, so a bad flag stops the
server with one clear line per mistake instead of a traceback (or a 500) much later. The
`tusserver` command prints them and exits 2; `create_app()` raises ValueError with them, so an
embedded app gets the same checks (the command validates once, in the parent process, and builds
its apps with `create_app(..., checked=True)`). `banner(settings)` says what a started server
does, and `redact(url)` keeps credentials out of everything shown or logged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import math
import os
import re
import sqlite3
import ssl
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from tusserver.config import Settings, flag_name, format_size, parse_size
from tusserver.hooks.model import EVENTS, default_events

Report = Callable[[str, str], None]  # (settings field, message): one problem


MIN_TOKEN_LENGTH = 16  # an admin token shorter than this is refused at start


def version() -> str:
    """The installed distribution's version (the package's own when run from a checkout)."""
    try:
        return importlib.metadata.version("tusserver")
    except importlib.metadata.PackageNotFoundError:
        from tusserver import __version__

        return __version__


def redact(url: str) -> str:
    """Only the scheme://host:port of `url` (*** for text that is not such a URL): whatever
    else a URL carries may be a secret (a password, a token in the query, or the path itself:
    Slack and Discord webhooks carry theirs there). Everything shown or logged about a URL
    setting goes through here."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if not parts.scheme or not parts.netloc:
        return "***"
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def check(settings: Settings) -> None:
    """validate() for the Python API: ValueError listing every problem."""
    problems = validate(settings)
    if problems:
        raise ValueError("invalid tusserver settings:\n" + "\n".join(problems))


def validate(settings: Settings, names: Mapping[str, str] | None = None) -> list[str]:
    """Every problem in `settings`, one line each, naming the setting as `names` says (the flag
    or TUSSERVER_* variable it came from; by default the flag). Empty means ready to serve.

    Reads the file system (directories, registry, TLS files) and imports configured plugin
    modules, but changes nothing.
    """
    names = names or {}
    problems: list[str] = []

    def bad(field: str, message: str) -> None:
        problems.append(f"{names.get(field, flag_name(field))}: {message}")

    for f in dataclasses.fields(Settings):
        value = getattr(settings, f.name)
        lowest, highest = f.metadata["minimum"], f.metadata["maximum"]
        if isinstance(value, int | float) and not isinstance(value, bool):
            shown: Callable[[Any], str] = format_size if f.metadata["parse"] is parse_size else str
            if highest is not None and not lowest <= value <= highest:
                bad(f.name, f"{shown(value)} is outside {shown(lowest)}-{shown(highest)}")
            elif not math.isfinite(value) or value < lowest:
                need = (
                    "must not be negative" if lowest == 0 else f"must be at least {shown(lowest)}"
                )
                bad(f.name, f"{value} {need}")
        choices = f.metadata["choices"]
        if choices and value not in choices:
            bad(f.name, f"unknown value {value!r} (use {', '.join(choices)})")

    try:
        re.compile(settings.cors_allow_origin)
    except re.error as exc:
        bad("cors_allow_origin", f"invalid regex {settings.cors_allow_origin!r}: {exc}")
    for field in ("metrics_path", "health_path", "readiness_path", "dashboard_path"):
        path = getattr(settings, field)
        if path and not path.startswith("/"):
            bad(field, f"{path!r} must start with / ('' turns it off)")
    _web_problems(settings, bad)
    _ietf_problems(settings, bad)
    if settings.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        bad("loop", "uvloop is not installed (use auto or asyncio)")

    directory = _directory_problem(settings.upload_dir)
    if directory:
        bad("upload_dir", directory)
    if settings.db_is_postgres:
        db = _postgres_problem(str(settings.db))
        if db:
            bad("db", db)
    elif settings.db is not None and "://" in settings.db:
        scheme = settings.db.partition("://")[0]
        bad("db", f"unsupported registry URL scheme {scheme!r} (use postgresql:// or a file path)")
    elif settings.db is not None or not directory:
        db = _registry_problem(settings.db_path)
        if db:
            bad("db" if settings.db is not None else "upload_dir", db)

    _tls_problems(settings, bad)
    _s3_problems(settings, bad)
    _hook_problems(settings, bad)
    _processing_problems(settings, bad)
    return problems


def _web_problems(settings: Settings, bad: Report) -> None:
    """The pages' paths (each its own: routes listed first would silently win), and an
    admin token strong enough to guard the dashboard."""
    from tusserver.admin.api import API_PREFIX
    from tusserver.web import ASSETS_PREFIX

    if not settings.web_ui_path.startswith("/"):
        bad("web_ui_path", f"{settings.web_ui_path!r} must start with /")
    taken = {
        getattr(settings, name): flag_name(name)
        for name in ("metrics_path", "health_path", "readiness_path")
        if getattr(settings, name)
    }
    for name in ("web_ui_path", "dashboard_path"):
        path = getattr(settings, name)
        if not path or (name == "web_ui_path" and settings.disable_web_ui):
            continue
        if path in taken:
            bad(name, f"{path!r} is also {taken[path]}")
        elif path.startswith((API_PREFIX, ASSETS_PREFIX)):
            bad(name, f"{path!r} lies under {API_PREFIX} or {ASSETS_PREFIX}, the pages' own")
        taken[path] = flag_name(name)
    if settings.admin_token and len(settings.admin_token) < MIN_TOKEN_LENGTH:
        bad(
            "admin_token",
            f"too short (at least {MIN_TOKEN_LENGTH} characters; make one with"
            " python3 -c 'import secrets; print(secrets.token_urlsafe())')",
        )


def _ietf_problems(settings: Settings, bad: Report) -> None:
    """Interop versions of the IETF draft that tusserver.ietf has a row for."""
    from tusserver.ietf import INTEROP_VERSIONS

    known = ", ".join(str(number) for number in INTEROP_VERSIONS)
    for value in settings.ietf_draft_versions:
        if not value.isdigit() or int(value) not in INTEROP_VERSIONS:
            bad("ietf_draft_versions", f"unknown interop version {value!r} (known: {known})")


def _directory_problem(path: Path) -> str | None:
    """Why `path` cannot hold uploads: neither a writable directory nor creatable as one
    (the command creates a missing one, as the embedded app's store does)."""
    try:
        existing = path
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent
        if not existing.is_dir():
            where = "" if existing == path else f"cannot be created: {existing} "
            return f"{path} {where}is not a directory"
        with tempfile.TemporaryFile(dir=existing):
            pass  # a real write: permissions, read-only mounts and root all told apart
    except OSError as exc:
        where = (
            "is not writable"
            if existing == path
            else f"cannot be created: {existing} is not writable"
        )
        return f"{path} {where} ({exc.strerror or exc})"
    return None


def _registry_problem(db: Path) -> str | None:
    """Why the SQLite registry at `db` cannot be opened (a new one needs a usable directory)."""
    if not db.exists():
        problem = _directory_problem(db.parent)
        return f"cannot create registry {db}: {problem}" if problem else None
    try:
        uri = f"file:{quote(str(db.absolute()))}?mode=rw"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
            connection.execute("PRAGMA schema_version")
    except sqlite3.Error as exc:
        return f"cannot open registry {db}: {exc}"
    return None


S3_MIN_PART = 5 * 1024**2
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_S3_OPTIONS = ("s3_endpoint", "s3_object_prefix", "s3_region", "s3_storage_class", "s3_sse")


def _s3_problems(settings: Settings, bad: Callable[[str, str], None]) -> None:
    """S3 settings that cannot work (checked without contacting S3: it may start later)."""
    if not settings.s3_bucket:
        for name in (*_S3_OPTIONS, "s3_presigned_downloads"):
            if getattr(settings, name):
                bad(name, "has no effect without --s3-bucket")
        return
    if not _BUCKET.fullmatch(settings.s3_bucket):
        bad("s3_bucket", f"{settings.s3_bucket!r} is not a valid bucket name (3-63 of a-z 0-9 . -)")
    endpoint = urlsplit(settings.s3_endpoint)
    if settings.s3_endpoint and (endpoint.scheme not in ("http", "https") or not endpoint.netloc):
        bad("s3_endpoint", f"{settings.s3_endpoint!r} is not an http(s):// URL")
    if S3_MIN_PART <= settings.s3_part_size < settings.s3_min_part_size:  # (else told above)
        bad("s3_min_part_size", "is larger than --s3-part-size")
    sse = settings.s3_sse
    if sse and sse not in ("AES256", "aws:kms") and not (sse.startswith("aws:kms:") and sse[8:]):
        bad("s3_sse", f"unknown value {sse!r} (use AES256, aws:kms or aws:kms:KEY-ID)")
    if settings.s3_object_prefix.startswith("/"):
        bad("s3_object_prefix", "must not start with / (keys are relative to the bucket)")


POSTGRES_FORM = "postgresql://user:password@host:port/database"


def _postgres_problem(url: str) -> str | None:
    """Why `url` is not a PostgreSQL URL the registry could connect with (it is not tried
    here: the database may start after the server). A host may also come as `?host=` (a
    Unix socket directory, as libpq allows)."""
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError for a port that is no number or above 65535
    except ValueError as exc:
        return f"not a valid PostgreSQL URL ({exc}; use {POSTGRES_FORM})"
    if port == 0:
        return f"the PostgreSQL URL's port must be 1-65535 (use {POSTGRES_FORM})"
    if not parts.hostname and not parse_qs(parts.query).get("host"):
        return f"the PostgreSQL URL names no host (use {POSTGRES_FORM})"
    if not parts.path.strip("/"):
        return f"the PostgreSQL URL names no database (use {POSTGRES_FORM})"
    return None


def registry_label(settings: Settings) -> str:
    """The registry as the banner shows it: the SQLite file, or postgresql://host:port/db
    (never the user or password)."""
    if not settings.db_is_postgres:
        return str(settings.db_path.absolute())
    url = str(settings.db)
    return f"{redact(url)}/{urlsplit(url).path.strip('/')}"


def storage_label(settings: Settings) -> str:
    """Where upload data goes, as the banner shows it."""
    if not settings.uses_s3:
        return str(settings.upload_dir.absolute())
    where = f"s3://{settings.s3_bucket}/{settings.s3_object_prefix}"
    at = f" at {redact(settings.s3_endpoint)}" if settings.s3_endpoint else ""
    return f"{where}{at} (scratch {settings.upload_dir.absolute()})"


def _tls_problems(settings: Settings, bad: Report) -> None:
    cert, key = settings.tls_certificate, settings.tls_key
    if cert and not key:
        bad("tls_certificate", "needs --tls-key too")
    if key and not cert:
        bad("tls_key", "needs --tls-certificate too")
    readable = True
    for field, path in (("tls_certificate", cert), ("tls_key", key)):
        try:
            if path:
                Path(path).open("rb").close()
        except OSError as exc:
            bad(field, f"cannot read {path} ({exc.strerror or exc})")
            readable = False
    if cert and key and readable:
        try:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key, password=lambda: b"")  # never prompt
        except (ssl.SSLError, OSError) as exc:
            bad("tls_certificate", f"{cert} with key {key} is not a usable PEM pair ({exc})")


def _hook_problems(settings: Settings, bad: Report) -> None:
    unknown = [name for name in settings.hooks_enabled_events if name not in EVENTS]
    if unknown:
        bad("hooks_enabled_events", f"unknown event {', '.join(unknown)} (use {', '.join(EVENTS)})")
    if settings.hooks_dir and not Path(settings.hooks_dir).is_dir():
        bad("hooks_dir", f"{settings.hooks_dir} is not a directory")
    url = settings.hooks_http
    if url and (not url.startswith(("http://", "https://")) or not urlsplit(url).hostname):
        bad("hooks_http", f"{redact(url)} is not an http:// or https:// URL")
    if settings.hooks_plugin:
        from tusserver.hooks.plugin import load_object

        try:
            load_object(settings.hooks_plugin)  # as the runtime loads it, constructor included
        except Exception as exc:  # anything the module raises on import
            bad("hooks_plugin", f"cannot load {settings.hooks_plugin!r} ({exc})")


def _processing_problems(settings: Settings, bad: Report) -> None:
    if not (settings.plugins or settings.plugin_path):
        return
    from tusserver.processing import load_plugins
    from tusserver.processing.csvplugin import csv_delimiter

    try:
        load_plugins(settings)  # resolves the names; the checks of their options are here
    except ValueError as exc:
        bad("plugins", str(exc))
    except Exception as exc:  # a --plugin-path module that does not import
        bad("plugin_path", f"cannot load ({exc})")
    if "csv" in settings.plugins:
        try:
            csv_delimiter(settings.csv_delimiter)
        except ValueError as exc:
            bad("csv_delimiter", str(exc))
    for name in settings.validate_digests:
        try:
            hashlib.new(name)
        except ValueError:
            bad("validate_digests", f"unknown digest {name!r}")


def hook_warnings(settings: Settings) -> list[str]:
    """Hook scripts that look meant to run but will not: named like an event but not
    executable (every such event would fail), or named like one with an extension (ignored)."""
    if not settings.hooks_dir or not Path(settings.hooks_dir).is_dir():
        return []
    warnings = []
    for entry in sorted(Path(settings.hooks_dir).iterdir()):
        if entry.name in EVENTS and entry.is_file() and not os.access(entry, os.X_OK):
            warnings.append(f"hook {entry} is not executable: {entry.name} hooks will fail")
        elif entry.name not in EVENTS and entry.name.split(".")[0] in EVENTS:
            event = entry.name.split(".")[0]
            warnings.append(f"hook {entry} is ignored: name it exactly {event}")
    return warnings


def hooks_by_event(settings: Settings) -> dict[str, list[str]]:
    """Which configured hook kinds receive each enabled event (file, http, plugin): the
    backends the dispatcher builds, asked as it asks them (call after validate)."""
    from tusserver.hooks.dispatch import build_backends

    backends = build_backends(settings)
    found: dict[str, list[str]] = {}
    for event in settings.hooks_enabled_events or default_events():
        kinds = [backend.kind for backend in backends if backend.handles(event)]
        if kinds:
            found[event] = kinds
    return found


def banner(settings: Settings, *, trailers: bool) -> list[str]:
    """A few lines saying what a starting server does; `trailers`: whether the server
    protocol passes request trailers (then checksum-trailer is advertised)."""
    from tusserver.backends import build_store
    from tusserver.handlers.options import extensions

    scheme = "https" if settings.tls_certificate else "http"
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    workers = f"{settings.workers} worker" + ("s" if settings.workers > 1 else "")
    hooks = "; ".join(
        f"{event}: {', '.join(kinds)}" for event, kinds in hooks_by_event(settings).items()
    )
    sources = [f"dir {Path(settings.hooks_dir).absolute()}"] if settings.hooks_dir else []
    sources += [f"http {redact(settings.hooks_http)}"] if settings.hooks_http else []
    sources += [f"plugin {settings.hooks_plugin}"] if settings.hooks_plugin else []
    plugins = ", ".join(settings.plugins)
    return [
        f"tusserver {version()} listening on {scheme}://{host}:{settings.port}{settings.base_path}"
        f" ({workers})",
        f"storage: {storage_label(settings)}, registry {registry_label(settings)}",
        f"extensions: {','.join(extensions(settings, trailers, build_store(settings)))}",
        f"hooks: {hooks or 'none'}" + (f" ({'; '.join(sources)})" if sources else ""),
        f"processing: {plugins} ({settings.processing_workers} at once per worker)"
        if plugins
        else "processing: off",
        f"metrics: {settings.metrics_path or 'off'}, health: {settings.health_path or 'off'},"
        f" readiness: {settings.readiness_path or 'off'}",
    ]
