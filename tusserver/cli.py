"""The `tusserver` command: flags (tusd-like names) and TUSSERVER_* variables -> uvicorn."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any, NoReturn

import uvicorn

from tusserver import connections
from tusserver.app import create_app
from tusserver.config import (
    GROUPS,
    SETTINGS_ENV,
    Settings,
    default_of,
    env_name,
    field_parser,
    flag_name,
    human_default,
    parse_bool,
    parse_duration,
    parse_int,
    parse_list,
    parse_size,
)
from tusserver.logs import setup_logging, uvicorn_log_config
from tusserver.metrics import prepare_multiprocess
from tusserver.startup import banner, hook_warnings, validate, version

log = logging.getLogger("tusserver")

METAVARS: dict[Any, str] = {
    parse_size: "SIZE",
    parse_duration: "DURATION",
    parse_int: "N",
    parse_list: "LIST",
    parse_bool: "BOOL",
}


class Parser(argparse.ArgumentParser):
    """argparse with our one-line message instead of a usage block (still exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"tusserver: {message} (see tusserver --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """One flag per Settings field in its --help section, with its environment variable and
    human default. Values stay text here: load_settings parses them all, so every bad one is
    reported (argparse would stop at the first, naming our parser function)."""
    parser = Parser(
        prog="tusserver",
        usage="%(prog)s [options]   (tusserver --help lists them by section)",
        description="tus 1.0 resumable upload server. Every flag can also be set through the "
        "environment variable named after it (shown in brackets).",
    )
    parser.add_argument("--version", action="version", version=f"tusserver {version()}")
    sections = {name: parser.add_argument_group(name) for name in GROUPS}
    for f in fields(Settings):
        shown = human_default(f)
        text = f"{f.metadata['help']} [{env_name(f.name)}]" + (
            f" (default: {shown})" if shown else ""
        )
        kwargs: dict[str, Any] = {
            "dest": f.name,
            "default": argparse.SUPPRESS,
            "help": text.replace("%", "%%"),
            "metavar": METAVARS.get(f.metadata["parse"]),
        }
        if isinstance(default_of(f), bool):
            kwargs.update(nargs="?", const="true")
        sections[f.metadata["group"]].add_argument(flag_name(f.name), **kwargs)
    return parser


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[Settings, list[str]]:
    """Settings (flag > TUSSERVER_* variable > default) and every mistake in them, one line
    each naming the flag or variable: values that do not parse, then tusserver.startup's
    checks. Values that do not parse are left at their default."""
    given = vars(build_parser().parse_args(argv))
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    names: dict[str, str] = {}
    problems: list[str] = []
    for f in fields(Settings):
        if f.name in given:
            names[f.name], text = flag_name(f.name), given[f.name]
        elif env_name(f.name) in environ:
            names[f.name], text = env_name(f.name), environ[env_name(f.name)]
        else:
            continue
        try:
            values[f.name] = field_parser(f)(text)
        except ValueError as exc:
            problems.append(f"{names[f.name]}: {exc}")
    settings = Settings(**values)
    return settings, problems + validate(settings, names)


def fail(problems: Sequence[str]) -> NoReturn:
    """One line per mistake on stderr, exit status 2 (as argparse does for usage errors)."""
    for problem in problems:
        print(f"tusserver: {problem}", file=sys.stderr)
    raise SystemExit(2)


def settings_from(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Checked settings, or exit 2 listing the mistakes."""
    settings, problems = load_settings(argv, environ)
    if problems:
        fail(problems)
    return settings


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


# glibc's mallopt parameter M_ARENA_MAX (malloc.h), and how many arenas the server allows.
_M_ARENA_MAX = -8
MALLOC_ARENAS = 2


def limit_malloc_arenas() -> None:
    """Cap glibc's malloc arenas at MALLOC_ARENAS (unless MALLOC_ARENA_MAX is set already).

    glibc gives each thread that allocates while others do an arena of its own (up to 8 per
    core), and an arena keeps its peak. Body writes and S3 part uploads run on threads, so
    the server's peak memory followed how many of them ran at once: with S3 parts sent four
    at a time a 3 GiB upload peaked 8 MiB above a 64 MiB one (74 vs 82 MiB; with two arenas
    the same). Worker processes, spawned afresh, read the variable at start; this process
    applies it now. Other C libraries do not know the call: nothing happens there."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    os.environ["MALLOC_ARENA_MAX"] = str(MALLOC_ARENAS)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, MALLOC_ARENAS)


def serve(settings: Settings) -> None:
    """Run uvicorn; several workers share the registry and lock files. `settings` must have
    passed validate (settings_from's do): neither this process nor a worker checks them again."""
    setup_logging(settings.log_level, settings.log_format)
    limit_malloc_arenas()
    settings.upload_dir.mkdir(parents=True, exist_ok=True)
    # Once, here in the parent: worker processes only build the app.
    for line in banner(settings, trailers=http_protocol() != "auto"):
        log.info(line)
    for line in hook_warnings(settings):
        log.warning(line)
    from tusserver import admin

    generated = admin.ensure_token(settings)  # before the workers: they all share it
    if settings.dashboard_path:
        scheme = "https" if settings.tls_certificate else "http"
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        origin = f"{scheme}://{host}:{settings.port}"
        log.info(admin.dashboard_line(settings, generated is not None, origin))
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
    connections.raise_nofile_limit()  # before the options: the connection cap follows it
    options.update(connections.uvicorn_options(settings))  # with the event loop
    if settings.tls_certificate:  # validated: both files given and a usable pair
        options.update(ssl_certfile=settings.tls_certificate, ssl_keyfile=settings.tls_key)
    if settings.workers > 1:
        os.environ[SETTINGS_ENV] = settings.to_json()
        # Workers are spawned afresh and see this before prometheus_client is imported.
        prepare_multiprocess(str(settings.upload_dir / ".metrics"))
        uvicorn.run(
            "tusserver.app:create_app_from_env", factory=True, workers=settings.workers, **options
        )
    else:
        uvicorn.run(create_app(settings, checked=True), **options)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `tusserver` console script: check everything, then serve."""
    serve(settings_from(argv if argv is not None else sys.argv[1:]))
