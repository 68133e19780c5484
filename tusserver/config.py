"""One settings object, filled from CLI flags and TUSSERVER_* environment variables.

Each field carries its own flag help and parser in its metadata, so the CLI, the environment
and the README table cannot drift apart: precedence is flag > environment > default.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "TUSSERVER_"
SETTINGS_ENV = "TUSSERVER_SETTINGS_JSON"  # how `--workers N` hands settings to workers
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_duration(text: str) -> float:
    """'24h', '1h30m', '90s', '250ms' or plain seconds; '0' disables the feature.

    Negative, nan and inf are refused here, so no flag or variable can ask for them.
    """
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        parts = _DURATION.findall(value)
        if parts and "".join(n + u for n, u in parts) == value:
            return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    else:
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    raise ValueError(f"invalid duration {text!r} (use e.g. 24h, 30m, 10s)")


def format_duration(seconds: float) -> str:
    """Inverse of parse_duration for defaults shown to people: 24h, 15m, 60s, 250ms."""
    if seconds and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds > 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    if seconds == int(seconds):
        return f"{int(seconds)}s" if seconds else "0"
    return f"{round(seconds * 1000)}ms"


def parse_size(text: str) -> int:
    """Bytes, with optional K/M/G/T (binary) suffix: '0', '1048576', '5G'."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    match = re.fullmatch(r"(\d+)([KMGT]?)", value)
    if not match:
        raise ValueError(f"invalid size {text!r} (use bytes or e.g. 512M, 5G)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


def format_size(size: int) -> str:
    """Inverse of parse_size for defaults shown to people: 16M, 64K, 0."""
    for suffix in ("T", "G", "M", "K"):
        if size and size % _SIZE_UNITS[suffix] == 0:
            return f"{size // _SIZE_UNITS[suffix]}{suffix}"
    return str(size)


def parse_int(text: str) -> int:
    """Whole numbers; a message of our own, since int()'s would name the function."""
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"invalid number {text!r} (use a whole number, e.g. 4)") from None


def parse_bool(text: str) -> bool:
    """Environment booleans: 1/true/yes/on versus 0/false/no/off."""
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"invalid boolean {text!r}")


def parse_list(text: str) -> list[str]:
    """Comma-separated list, blanks dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]


GROUPS = ("server", "storage", "s3", "limits", "hooks", "processing", "web", "operations")


def _opt(
    default: Any,
    help: str,
    parse: Callable[[str], Any] | None = None,
    *,
    group: str,
    shown: str | None = None,
    minimum: float = 0,
    maximum: float | None = None,
    choices: tuple[str, ...] = (),
) -> Any:
    """A settings field with the metadata the CLI and environment loader read.

    `group` places the flag in one section of `--help` (one of GROUPS); `shown` is the default
    as a person writes it (`auto`, `24h`) where the stored value would read badly (see
    human_default). Numbers must lie in [minimum, maximum] and text, when `choices` are given,
    be one of them (checked by tusserver.startup.validate).
    """
    assert group in GROUPS, group
    meta = {
        "help": help,
        "parse": parse,
        "group": group,
        "shown": shown,
        "minimum": minimum,
        "maximum": maximum,
        "choices": choices,
    }
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Settings:
    """Every knob of the server. Units: bytes and seconds."""

    host: str = _opt("127.0.0.1", "address to listen on", group="server")
    port: int = _opt(8080, "port to listen on", parse_int, group="server", minimum=1, maximum=65535)
    base_path: str = _opt("/files/", "URL path uploads are created under", group="server")
    upload_dir: Path = _opt(
        Path("./data"), "directory holding upload data", Path, group="storage", shown="./data"
    )
    db: str | None = _opt(
        None,
        "registry: a SQLite file (default: UPLOAD_DIR/tusserver.db) or a"
        " postgresql://user:pass@host:port/db URL (several instances)",
        group="storage",
    )
    db_pool_size: int = _opt(
        10,
        "PostgreSQL connections per worker process (plus one for locks)",
        parse_int,
        group="storage",
        minimum=1,
        maximum=1000,
    )
    s3_bucket: str = _opt(
        "", "keep upload data in this S3 bucket (turns the S3 store on)", group="s3"
    )
    s3_endpoint: str = _opt(
        "",
        "S3 endpoint URL for S3-compatible services (MinIO, Ceph, R2, B2, ...); default AWS",
        group="s3",
    )
    s3_object_prefix: str = _opt(
        "", "prefix of every object key, e.g. uploads/ (a folder in the bucket)", group="s3"
    )
    s3_region: str = _opt(
        "", "S3 region (default: from the AWS configuration, else us-east-1)", group="s3"
    )
    s3_part_size: int = _opt(
        50 * 1024**2,
        "preferred size of multipart parts (at least 5M; grown for uploads over 10,000 parts)",
        parse_size,
        group="s3",
        minimum=5 * 1024**2,
        maximum=5 * 1024**3,
    )
    s3_min_part_size: int = _opt(
        5 * 1024**2,
        "smallest part sent before an upload's end (set it to --s3-part-size for services"
        " that need equal parts, such as Cloudflare R2)",
        parse_size,
        group="s3",
        minimum=5 * 1024**2,
        maximum=5 * 1024**3,
    )
    s3_max_concurrent_parts: int = _opt(
        4,
        "parts of one upload sent to S3 at once (each one is staged in --upload-dir)",
        parse_int,
        group="s3",
        minimum=1,
        maximum=64,
    )
    s3_force_path_style: bool = _opt(
        False,
        "address the bucket in the URL path (MinIO and most self-hosted services)",
        parse_bool,
        group="s3",
    )
    s3_storage_class: str = _opt(
        "", "storage class of new objects, e.g. STANDARD_IA (default: the bucket's)", group="s3"
    )
    s3_sse: str = _opt(
        "",
        "server-side encryption: AES256, aws:kms or aws:kms:KEY-ID (default: the bucket's)",
        group="s3",
    )
    s3_checksum: str = _opt(
        "crc32",
        "integrity checksum sent with every part (md5 = Content-MD5, for services without"
        " x-amz-checksum support)",
        group="s3",
        choices=("crc32", "sha256", "md5", "none"),
    )
    s3_presigned_downloads: bool = _opt(
        False,
        "GET redirects to a short-lived presigned S3 URL instead of streaming the object",
        parse_bool,
        group="s3",
    )
    max_size: int = _opt(
        0,
        "maximum upload size in bytes (K/M/G suffix ok; 0 = unlimited)",
        parse_size,
        group="limits",
    )
    expiration: float = _opt(
        86400.0,
        "unfinished uploads expire after this long without progress (0 = never)",
        parse_duration,
        group="storage",
    )
    cleanup_interval: float = _opt(
        60.0, "how often expired uploads are removed", parse_duration, group="storage"
    )
    behind_proxy: bool = _opt(
        False, "trust X-Forwarded-Host/Proto and Forwarded", parse_bool, group="server"
    )
    cors_allow_origin: str = _opt(".*", "regex of origins allowed by CORS", group="server")
    cors_allow_headers: list[str] = _opt(
        [],
        "request headers allowed by CORS besides the tus set (comma-separated)",
        parse_list,
        group="server",
    )
    cors_expose_headers: list[str] = _opt(
        [],
        "response headers exposed to browsers besides the tus set (comma-separated)",
        parse_list,
        group="server",
    )
    cors_allow_credentials: bool = _opt(
        False,
        "let browsers send cookies and credentials (the origin is echoed, never *)",
        parse_bool,
        group="server",
    )
    cors_max_age: float = _opt(
        86400.0,
        "how long browsers may cache a CORS preflight answer",
        parse_duration,
        group="server",
    )
    disable_cors: bool = _opt(
        False,
        "send no CORS headers at all (a proxy in front handles CORS)",
        parse_bool,
        group="server",
    )
    tls_certificate: str = _opt(
        "", "PEM certificate (chain) file: serve HTTPS directly (needs --tls-key)", group="server"
    )
    tls_key: str = _opt("", "PEM private key file for --tls-certificate", group="server")
    disable_download: bool = _opt(
        False, "disable GET downloads of finished uploads", parse_bool, group="server"
    )
    disable_termination: bool = _opt(
        False, "disable DELETE (termination extension)", parse_bool, group="server"
    )
    # -- the IETF resumable-upload draft beside tus 1.0 (tusserver.draft) --
    disable_ietf_draft: bool = _opt(
        False,
        "turn off the IETF resumable-upload draft (iOS 17+ URLSession) on the tus endpoint",
        parse_bool,
        group="server",
    )
    ietf_draft_versions: list[str] = _opt(
        ["3", "4", "5", "6", "7", "8"],
        "interop versions of the IETF draft served (comma-separated; 9 = draft -12,"
        " provisional, opt-in)",
        parse_list,
        group="server",
        shown="3,4,5,6,7,8",
    )
    ietf_interim: str = _opt(
        "auto",
        "send 104 (Upload Resumption Supported) interim responses: on, off, or auto (off"
        " under --behind-proxy: proxies may take a 104 for the final response)",
        group="server",
        choices=("auto", "on", "off"),
    )
    workers: int = _opt(1, "uvicorn worker processes", parse_int, group="server", minimum=1)
    loop: str = _opt(
        "auto",
        "event loop: auto (uvloop when installed), uvloop or asyncio",
        group="server",
        choices=("auto", "uvloop", "asyncio"),
    )
    lock_timeout: float = _opt(
        10.0,
        "how long a request waits for an upload held by another request",
        parse_duration,
        group="limits",
    )
    network_timeout: float = _opt(
        60.0,
        "abort a request whose body stalls this long (0 = never)",
        parse_duration,
        group="limits",
    )
    shutdown_timeout: float = _opt(
        10.0,
        "on SIGTERM, wait this long for in-flight requests",
        parse_duration,
        group="operations",
    )
    log_level: str = _opt(
        "info",
        "log level: debug, info, warning, error",
        group="operations",
        choices=("debug", "info", "warning", "error"),
    )
    # -- operations and limits (tusserver.metrics, tusserver.health, tusserver.logs) --
    log_format: str = _opt(
        "text",
        "log line format: text, or json (one object per line)",
        group="operations",
        choices=("text", "json"),
    )
    metrics_path: str = _opt(
        "/metrics", "Prometheus metrics endpoint ('' = off)", group="operations"
    )
    health_path: str = _opt(
        "/health", "health check endpoint, 200/503 JSON ('' = off)", group="operations"
    )
    readiness_path: str = _opt(
        "/ready",
        "readiness probe for load balancers: 200 when this instance can take uploads now"
        " ('' = off)",
        group="operations",
    )
    min_free_space: int = _opt(
        0,
        "keep this much disk free: new uploads and bodies get 507 below it",
        parse_size,
        group="limits",
    )
    max_concurrent_uploads: int = _opt(
        0,
        "bodies received at once per worker; more get 503 + Retry-After (0 = no limit)",
        parse_int,
        group="limits",
    )
    read_header_timeout: float = _opt(
        10.0,
        "close a connection that has not sent a complete request head this long after the"
        " accept, or after the first byte of a request on a kept-alive one (0 = never)",
        parse_duration,
        group="limits",
    )
    idle_timeout: float = _opt(
        15.0,
        "close keep-alive connections idle this long between requests (0 = never)",
        parse_duration,
        group="limits",
    )
    max_header_size: int = _opt(
        64 * 1024,
        "largest request head (request line + headers); larger get 431",
        parse_size,
        group="limits",
        shown="64K",
        minimum=1024,  # smaller than any real client's request head
    )
    max_connections: int = _opt(
        0,
        "open connections per worker; at the cap the oldest one still sending its head is"
        " closed (0 = auto: from the descriptor limit)",
        parse_int,
        group="limits",
        shown="auto",
    )
    # -- hooks (tusd-compatible; see tusserver.hooks) --
    hooks_dir: str = _opt(
        "", "directory of tusd-style hook scripts, one executable per event", group="hooks"
    )
    hooks_http: str = _opt(
        "", "URL that receives every hook event as a JSON POST (tusd schema)", group="hooks"
    )
    hooks_http_forward_headers: list[str] = _opt(
        [],
        "client request headers copied onto HTTP hook requests (comma-separated)",
        parse_list,
        group="hooks",
    )
    hooks_http_retry: int = _opt(
        3, "HTTP hook retries on network errors and 5xx answers", parse_int, group="hooks"
    )
    hooks_http_backoff: float = _opt(
        1.0, "pause before each HTTP hook retry", parse_duration, group="hooks"
    )
    hooks_plugin: str = _opt("", "in-process Python hook object, module:object", group="hooks")
    hooks_enabled_events: list[str] = _opt(
        [],
        "hook events to emit (comma-separated; empty = tusd's default: pre-create,post-create,"
        "post-receive,post-finish,post-terminate; also pre-finish, pre-terminate, pre-access, "
        "post-process)",
        parse_list,
        group="hooks",
    )
    hooks_timeout: float = _opt(
        30.0,
        "a hook running longer is killed and counts as failed (0 = never)",
        parse_duration,
        group="hooks",
    )
    progress_hooks_interval: float = _opt(
        1.0,
        "post-receive fires at most this often per upload",
        parse_duration,
        group="hooks",
    )
    hooks_max_attempts: int = _opt(
        10,
        "post-finish deliveries are retried until this many attempts failed",
        parse_int,
        group="hooks",
        minimum=1,
    )
    hooks_retry_delay: float = _opt(
        5.0,
        "first pause before retrying a failed post-finish (doubles each time)",
        parse_duration,
        group="hooks",
    )

    # -- post-finish processing (see tusserver.processing) --
    plugins: list[str] = _opt(
        [],
        "processing plugins run on every finished upload, comma-separated (validate,csv);"
        " an upload may pick a subset with the `pipeline` metadata key",
        parse_list,
        group="processing",
    )
    plugin_path: list[str] = _opt(
        [],
        "extra processing plugin modules: .py files or importable module names",
        parse_list,
        group="processing",
    )
    processing_workers: int = _opt(
        2,
        "processing jobs run at once per worker process",
        parse_int,
        group="processing",
        minimum=1,
    )
    validate_digests: list[str] = _opt(
        [],
        "digests computed besides sha256 (e.g. md5,sha1,blake2b)",
        parse_list,
        group="processing",
    )
    validate_allowed_types: list[str] = _opt(
        [],
        "sniffed content types accepted, globs ok (text/csv,text/*); empty = any",
        parse_list,
        group="processing",
    )
    validate_max_size: int = _opt(
        0,
        "largest file the validate plugin accepts (K/M/G suffix ok; 0 = any)",
        parse_size,
        group="processing",
    )
    validate_encodings: list[str] = _opt(
        [],
        "text encodings accepted: utf-8, utf-8-sig, latin-1 (empty = any)",
        parse_list,
        group="processing",
    )
    csv_delimiter: str = _opt(
        "auto", "CSV delimiter: auto, comma, semicolon, tab, pipe or a char", group="processing"
    )
    csv_header: str = _opt(
        "auto", "CSV header row: auto, yes, no", group="processing", choices=("auto", "yes", "no")
    )
    csv_encoding: str = _opt(
        "auto",
        "CSV text encoding: auto, utf-8, latin-1",
        group="processing",
        choices=("auto", "utf-8", "latin-1"),
    )
    csv_max_record: int = _opt(
        16 * 1024 * 1024,
        "longest CSV record; longer ones are reported and skipped",
        parse_size,
        group="processing",
        minimum=1,
    )
    csv_max_errors: int = _opt(
        100, "CSV errors kept in detail (all are counted)", parse_int, group="processing"
    )
    csv_infer_types: bool = _opt(
        True, "infer column types from a sample of records", parse_bool, group="processing"
    )
    # -- browser pages (tusserver.web) and the admin dashboard (tusserver.admin) --
    disable_web_ui: bool = _opt(False, "turn off the browser upload page", parse_bool, group="web")
    web_ui_path: str = _opt("/", "URL path of the browser upload page", group="web")
    dashboard_path: str = _opt(
        "/dashboard",
        "URL path of the admin dashboard; its JSON API is under /admin/api/ ('' = both off)",
        group="web",
    )
    admin_token: str = _opt(
        "",
        "token for the dashboard and admin API (default: one generated at start and logged;"
        " several instances need one set)",
        group="web",
        shown="generated",
    )

    def __post_init__(self) -> None:
        self.base_path = "/" + self.base_path.strip("/") + "/" if self.base_path.strip("/") else "/"
        self.upload_dir = Path(self.upload_dir)
        # uvicorn and logging want these in lower case; people type INFO or JSON too
        self.log_level, self.log_format, self.loop = (
            str(self.log_level).lower(),
            str(self.log_format).lower(),
            str(self.loop).lower(),
        )
        if self.db is not None:
            self.db = str(self.db)

    @property
    def db_is_postgres(self) -> bool:
        """Whether the registry (and coordination) is a shared PostgreSQL database."""
        return self.db is not None and self.db.startswith(("postgresql://", "postgres://"))

    @property
    def uses_s3(self) -> bool:
        """Whether upload data lives in S3 (--upload-dir is then only scratch space)."""
        return bool(self.s3_bucket)

    @property
    def db_path(self) -> Path:
        """Where a SQLite registry lives: next to the data unless told otherwise."""
        return Path(self.db) if self.db is not None else self.upload_dir / "tusserver.db"

    def to_json(self) -> str:
        """Serialised form handed to uvicorn worker processes through the environment."""
        data = dataclasses.asdict(self)
        return json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()})

    @classmethod
    def from_json(cls, text: str) -> Settings:
        """Inverse of to_json."""
        return cls(**json.loads(text))


def flag_name(name: str) -> str:
    """Settings field -> CLI flag (tusd-like kebab case)."""
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    """Settings field -> environment variable."""
    return ENV_PREFIX + name.upper()


def field_parser(f: dataclasses.Field[Any]) -> Callable[[str], Any]:
    """How a text value (flag or environment) becomes this field's value."""
    parse = f.metadata.get("parse")
    return parse if parse is not None else str


def default_of(f: dataclasses.Field[Any]) -> Any:
    """A field's default value (a fresh list for list fields)."""
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def human_default(f: dataclasses.Field[Any]) -> str:
    """The default as a person would type it, for --help and the README table: `24h`, `16M`,
    `on`/`off`, `auto`; '' when there is none (never `None`, `[]`, `86400.0` or `65536`)."""
    if f.metadata.get("shown") is not None:
        return str(f.metadata["shown"])
    value = default_of(f)
    parse = f.metadata.get("parse")
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None or value == [] or value == "":
        return ""
    if parse is parse_duration:
        return format_duration(value)
    if parse is parse_size:
        return format_size(value)
    return str(value)
