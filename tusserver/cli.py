"""The `tusserver` command: flags (tusd-like names) and TUSSERVER_* variables -> uvicorn."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import MISSING, fields
from typing import Any

import uvicorn

from tusserver.app import create_app
from tusserver.config import Settings, env_name, field_parser, flag_name, from_environment
from tusserver.logs import setup_logging, uvicorn_log_config
from tusserver.metrics import prepare_multiprocess


def build_parser() -> argparse.ArgumentParser:
    """One flag per Settings field, with its environment variable and default in the help."""
    parser = argparse.ArgumentParser(
        prog="tusserver",
        description="tus 1.0 resumable upload server. Every flag can also be set through the "
        "environment variable named after it (shown in brackets).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for f in fields(Settings):
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        kwargs: dict[str, Any] = {
            "dest": f.name,
            "default": argparse.SUPPRESS,
            "help": f"{f.metadata['help']} [{env_name(f.name)}] (default: {default})",
        }
        if isinstance(default, bool):
            kwargs.update(nargs="?", const=True, metavar="BOOL")
        kwargs["type"] = field_parser(f)
        parser.add_argument(flag_name(f.name), **kwargs)
    return parser


def settings_from(
    argv: Sequence[str] | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Flags override the environment, which overrides the defaults."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    try:
        values = from_environment(environ)
    except ValueError as exc:
        parser.error(str(exc))
    values.update(args)
    return Settings(**values)


# Raw large-body path (tusserver.fastbody) stacked on the trailer protocol (subclass chain).
FAST_PROTOCOL = "tusserver.fastbody:TusHttpProtocol"


def http_protocol() -> str:
    """uvicorn's httptools protocol with the raw large-body path (tusserver.fastbody) and
    request trailers exposed (tusserver.trailers), or uvicorn's default when httptools is
    missing (then checksum-trailer is not advertised and bodies take uvicorn's own path)."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "auto"
    return FAST_PROTOCOL


def serve(settings: Settings) -> None:
    """Run uvicorn with the settings; several workers share the registry and lock files."""
    setup_logging(settings.log_level, settings.log_format)
    settings.upload_dir.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "proxy_headers": settings.behind_proxy,
        "forwarded_allow_ips": "*" if settings.behind_proxy else None,
        "timeout_graceful_shutdown": settings.shutdown_timeout or None,
        "access_log": False,  # tusserver.access logs one line per request instead
        "log_config": uvicorn_log_config(settings.log_level, settings.log_format),
        "server_header": False,
        # Request trailers reach the app only through our protocol (checksum-trailer).
        "http": http_protocol(),
    }
    if settings.workers > 1:
        os.environ["TUSSERVER_SETTINGS_JSON"] = settings.to_json()
        # Workers are spawned afresh and see this before prometheus_client is imported.
        prepare_multiprocess(str(settings.upload_dir / ".metrics"))
        uvicorn.run(
            "tusserver.app:create_app_from_env", factory=True, workers=settings.workers, **options
        )
    else:
        uvicorn.run(create_app(settings), **options)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `tusserver` console script."""
    settings = settings_from(argv if argv is not None else sys.argv[1:])
    serve(settings)
