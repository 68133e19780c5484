"""The `tusserver` command as a new user meets it: mistakes in flags and TUSSERVER_* variables
stop it with one line each and exit 2, the start-up banner, HTTPS without a proxy,
--version and the sectioned --help."""

from __future__ import annotations

import importlib.metadata
import os
import re
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, TUS, ServerFactory, wait_for

from tusserver import Settings, create_app
from tusserver.config import GROUPS
from tusserver.hooks.http import HttpHooks
from tusserver.processing import load_plugins
from tusserver.startup import redact, registry_label, storage_label, validate


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m tusserver ARGS` to completion (only for runs that must not start serving)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TUSSERVER_")}
    environ["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "tusserver", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**environ, **(env or {})},
        timeout=60,
    )


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A throw-away certificate for 127.0.0.1 and its key (openssl CLI)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_every_mistake_is_one_line_and_exit_2(tmp_path):
    """All mistakes at once, each named by its flag, no traceback, no internal names."""
    a_file = tmp_path / "file"
    a_file.write_text("not a directory, not a database")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    mistakes = {
        "--max-size": ["lots"],
        "--expiration": ["-5"],
        "--lock-timeout": ["soon"],
        "--workers": ["many"],
        "--port": ["70000"],
        "--processing-workers": ["0"],
        "--cors-allow-origin": ["(unclosed"],
        "--upload-dir": [str(a_file / "up")],
        "--db": [str(a_file)],
        "--log-level": ["loud"],
        "--log-format": ["xml"],
        "--loop": ["tokio"],
        "--plugins": ["validate,nope"],
        "--hooks-dir": [str(tmp_path / "missing")],
        "--hooks-enabled-events": ["pre-create,pre-nothing"],
        "--tls-certificate": [str(tmp_path / "missing.pem")],
        "--metrics-path": ["metrics"],
        "--readiness-path": ["ready"],
    }
    args = [item for flag, value in mistakes.items() for item in (flag, *value)]
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr and "parse_" not in result.stderr
    assert all(line.startswith("tusserver: --") for line in lines), lines
    named = [line.split(":")[1].strip() for line in lines]
    # --tls-certificate has two mistakes: no --tls-key, and the file is missing
    assert sorted(named) == sorted([*mistakes, "--tls-certificate"]), lines
    assert "tusserver: --max-size: invalid size 'lots' (use bytes or e.g. 512M, 5G)" in lines
    assert "tusserver: --port: 70000 is outside 1-65535" in lines
    assert any("unknown value 'loud'" in line for line in lines)
    assert any("pre-nothing" in line and "--hooks-enabled-events" in line for line in lines)
    assert any("'nope'" in line and "--plugins" in line for line in lines)
    assert not (tmp_path / "missing").exists()


def test_environment_mistakes_name_the_variable(tmp_path):
    env = {"TUSSERVER_MAX_SIZE": "lots", "TUSSERVER_PORT": "-1", "TUSSERVER_LOG_LEVEL": "loud"}
    result = run("--hooks-timeout=-1s", cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    assert sorted(result.stderr.splitlines()) == [
        "tusserver: --hooks-timeout: invalid duration '-1s' (use e.g. 24h, 30m, 10s)",
        "tusserver: TUSSERVER_LOG_LEVEL: unknown value 'loud' (use debug, info, warning, error)",
        "tusserver: TUSSERVER_MAX_SIZE: invalid size 'lots' (use bytes or e.g. 512M, 5G)",
        "tusserver: TUSSERVER_PORT: -1 is outside 1-65535",
    ]


def test_port_minus_one_and_unknown_flag(tmp_path):
    result = run("--port", "-1", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (2, "tusserver: --port: -1 is outside 1-65535\n")
    result = run("--max-sise", "5G", cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert "--max-sise" in result.stderr and "Traceback" not in result.stderr


def test_tls_mistakes(tmp_path):
    _, key = self_signed(tmp_path)
    result = run("--tls-key", str(key), cwd=tmp_path)
    assert result.stderr == "tusserver: --tls-key: needs --tls-certificate too\n"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnope\n")
    result = run("--tls-certificate", str(garbage), "--tls-key", str(key), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("tusserver: --tls-certificate: ")
    assert len(result.stderr.splitlines()) == 1 and "not a usable PEM pair" in result.stderr


def test_upload_dir_rules(tmp_path):
    """A missing directory is created later (validate changes nothing); one that cannot be
    created or written is a mistake. /proc stands in for a read-only place (tests run as root,
    for whom permission bits do not count)."""
    missing = tmp_path / "new" / "uploads"
    assert validate(Settings(upload_dir=missing)) == []
    assert not (tmp_path / "new").exists()
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert validate(Settings(upload_dir=a_file)) == [f"--upload-dir: {a_file} is not a directory"]
    [problem] = validate(Settings(upload_dir=a_file / "sub"))
    assert problem.startswith("--upload-dir: ") and "cannot be created" in problem
    if Path("/proc/self").exists():
        [problem] = validate(Settings(upload_dir=Path("/proc")))
        assert problem.startswith("--upload-dir: /proc is not writable")
        [problem] = validate(Settings(upload_dir=Path("/proc/tusserver-test")))
        assert "cannot be created: /proc is not writable" in problem


def test_create_app_runs_the_same_checks(tmp_path):
    """The embedded case: create_app raises ValueError with one line per mistake."""
    settings = Settings(upload_dir=tmp_path, port=0, cors_allow_origin="(", cleanup_interval=-1)
    with pytest.raises(ValueError) as raised:
        create_app(settings)
    lines = str(raised.value).splitlines()[1:]
    assert lines == validate(settings)
    assert [line.split(":")[0] for line in lines] == [
        "--port",
        "--cleanup-interval",
        "--cors-allow-origin",
    ]


def test_create_app_checked_skips_the_checks(tmp_path):
    """checked=True: the caller validated already (the command, once, in its parent)."""
    settings = Settings(upload_dir=tmp_path, port=0)  # a mistake that only validate notices
    with pytest.raises(ValueError):
        create_app(settings)
    assert create_app(settings, checked=True).state.core.settings is settings


def test_processing_option_mistakes_name_their_setting(tmp_path):
    """validate holds the checks of --csv-* and --validate-digests (load_plugins only resolves
    the plugin names): each mistake named by its own flag or variable."""
    settings = Settings(
        upload_dir=tmp_path,
        plugins=["csv", "validate"],
        csv_delimiter="ab",
        csv_header="maybe",
        csv_encoding="utf-16",
        validate_digests=["md5", "nope"],
    )
    assert set(load_plugins(settings)) == {"csv", "validate"}
    problems = validate(settings, {"csv_header": "TUSSERVER_CSV_HEADER"})
    assert [line.split(":")[0] for line in problems] == [
        "TUSSERVER_CSV_HEADER",
        "--csv-encoding",
        "--csv-delimiter",
        "--validate-digests",
    ]
    assert "TUSSERVER_CSV_HEADER: unknown value 'maybe' (use auto, yes, no)" in problems
    assert "--csv-delimiter: must be one ASCII character, not 'ab'" in problems
    assert "--validate-digests: unknown digest 'nope'" in problems


def test_redact(tmp_path):
    """Only scheme://host:port of a URL is ever shown: passwords, lone tokens, query values
    and paths (webhooks carry their token there) are all dropped."""
    assert redact("postgresql://user:pass@db.example/tus") == "postgresql://db.example"
    assert redact("https://TOKEN@hooks.example/h?token=abc&x") == "https://hooks.example"
    assert redact("https://hooks.slack.com/services/T0/B0/SECRET") == "https://hooks.slack.com"
    assert redact("https://u:p@[::1]:8443/api/webhooks/1/SECRET?t=x") == "https://[::1]:8443"
    assert redact("hooks.example/SECRET") == "***"
    assert redact("/var/lib/tus/registry.db") == "***"
    with pytest.raises(ValueError) as raised:
        HttpHooks("ftp://hooks.example/SECRET", timeout=1, retries=0, backoff=0, forward_headers=[])
    assert "SECRET" not in str(raised.value)
    [problem] = validate(Settings(upload_dir=tmp_path, hooks_http="ftp://h.example/SECRET"))
    assert problem == "--hooks-http: ftp://h.example is not an http:// or https:// URL"


def test_db_urls_are_checked_and_shown_without_credentials(tmp_path):
    """--db: a PostgreSQL URL must name a host (or ?host=, a socket directory) and a database;
    other schemes are refused; one line each, the password never shown. The banner shows the
    registry as postgresql://host:port/db."""
    mistakes = {
        "postgresql://alice:s3cret@db.example:5432/": "names no database",
        "postgres://alice:s3cret@/tus": "names no host",
        "postgresql://alice:s3cret@db.example:none/tus": "not a valid PostgreSQL URL",
        "mysql://alice:s3cret@db.example/tus": "unsupported registry URL scheme 'mysql'",
    }
    for url, expected in mistakes.items():
        [problem] = validate(Settings(upload_dir=tmp_path, db=url))
        assert problem.startswith("--db: ") and expected in problem, problem
        assert "s3cret" not in problem and "alice" not in problem
    for url in ("postgresql://alice:s3cret@db.example:6543/tus", "postgresql:///tus?host=/run"):
        assert validate(Settings(upload_dir=tmp_path, db=url)) == []
    settings = Settings(upload_dir=tmp_path, db="postgresql://alice:s3cret@db.example:6543/tus")
    assert registry_label(settings) == "postgresql://db.example:6543/tus"
    assert registry_label(Settings(upload_dir=tmp_path)) == str(tmp_path / "tusserver.db")


def test_s3_settings_are_checked_without_contacting_s3(tmp_path):
    """S3 mistakes are one line each, found before start (S3 is not contacted: it may start
    later); S3 options without --s3-bucket are pointed out rather than silently ignored."""
    ok = {"upload_dir": tmp_path, "s3_bucket": "uploads"}
    assert validate(Settings(**ok, s3_sse="aws:kms:arn:aws:kms:eu-1:1:key/k")) == []
    assert validate(Settings(**ok, s3_endpoint="https://minio.internal:9000")) == []
    mistakes = {
        "s3_bucket": ("Not_A_Bucket", "--s3-bucket: 'Not_A_Bucket' is not a valid bucket name"),
        "s3_endpoint": ("minio:9000", "--s3-endpoint: 'minio:9000' is not an http(s):// URL"),
        "s3_sse": ("aws:kms:", "--s3-sse: unknown value 'aws:kms:'"),
        "s3_object_prefix": ("/tus/", "--s3-object-prefix: must not start with /"),
        "s3_part_size": (4 * 1024**2, "--s3-part-size: 4M is outside 5M-5G"),
        "s3_checksum": ("crc64", "--s3-checksum: unknown value 'crc64'"),
    }
    for name, (value, expected) in mistakes.items():
        [problem] = validate(Settings(**{**ok, name: value}))
        assert problem.startswith(expected), problem
    [problem] = validate(Settings(**ok, s3_min_part_size=64 * 1024**2))
    assert problem == "--s3-min-part-size: is larger than --s3-part-size"
    [problem] = validate(Settings(upload_dir=tmp_path, s3_endpoint="http://minio:9000"))
    assert problem == "--s3-endpoint: has no effect without --s3-bucket"


def test_page_paths_and_admin_token_are_checked(tmp_path):
    """Each page has a path of its own (a route listed first would silently win), never
    under the pages' own prefixes; an admin token is long enough to guard the dashboard."""
    cases = {
        "--dashboard-path: '/metrics' is also --metrics-path": {"dashboard_path": "/metrics"},
        "--dashboard-path: '/' is also --web-ui-path": {"dashboard_path": "/"},
        "--web-ui-path: 'upload' must start with /": {"web_ui_path": "upload"},
        "--web-ui-path: '/admin/api/x' lies under /admin/api/ or /_tusserver/, the pages' own": {
            "web_ui_path": "/admin/api/x"
        },
    }
    for expected, values in cases.items():
        assert validate(Settings(upload_dir=tmp_path, **values)) == [expected]
    [problem] = validate(Settings(upload_dir=tmp_path, admin_token="short"))
    assert problem.startswith("--admin-token: too short (at least 16 characters")
    assert "short" not in problem.removeprefix("--admin-token: too short")  # never echoed
    fine = Settings(upload_dir=tmp_path, dashboard_path="", web_ui_path="/metrics")
    assert validate(fine) == ["--web-ui-path: '/metrics' is also --metrics-path"]
    assert validate(Settings(upload_dir=tmp_path, disable_web_ui=True, web_ui_path="/ready")) == []


def test_s3_banner_names_bucket_and_endpoint_host_only(tmp_path):
    settings = Settings(
        upload_dir=tmp_path,
        s3_bucket="uploads",
        s3_object_prefix="tus/",
        s3_endpoint="https://KEY:SECRET@minio.internal:9000/path",
    )
    assert storage_label(settings) == (
        f"s3://uploads/tus/ at https://minio.internal:9000 (scratch {tmp_path.absolute()})"
    )
    assert storage_label(Settings(upload_dir=tmp_path)) == str(tmp_path.absolute())


def test_version():
    result = run("--version", cwd=ROOT)
    assert result.returncode == 0
    assert result.stdout == f"tusserver {importlib.metadata.version('tusserver')}\n"


def test_help_is_sectioned_with_human_defaults():
    out = run("--help", cwd=ROOT).stdout
    positions = [out.index(f"\n{group}:\n") for group in GROUPS]
    assert positions == sorted(positions)
    for raw in ("None", "[]", "86400.0", "65536", "16777216"):
        assert raw not in out, raw
    compact = " ".join(out.split())
    for shown in ("(default: 24h)", "(default: 16M)", "(default: 64K)", "(default: auto)"):
        assert shown in compact, shown
    assert "(default: off)" in compact and "(default: on)" in compact
    assert re.search(r"--hooks-dir \S+\s+directory of tusd-style hook scripts", out)


def test_banner_once_with_workers_and_without_secrets(make_server: ServerFactory, tmp_path):
    """Banner: URL, storage, extensions as advertised, hooks per event, processing, ops paths,
    a warning for a non-executable hook; once with two workers; credentials never shown."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "post-finish").write_text("#!/bin/sh\n")
    (hooks / "post-finish").chmod(0o755)
    (hooks / "pre-terminate").write_text("#!/bin/sh\n")  # not executable
    server = make_server(
        "--workers", "2",
        "--hooks-dir", str(hooks),
        "--hooks-enabled-events", "post-finish,pre-terminate",
        "--hooks-http", "http://alice:s3cret@127.0.0.1:9/hook?token=t0ken",
        "--plugins", "validate",
        "--health-path", "",
    )  # fmt: skip
    options = httpx.options(server.url)
    wait_for(lambda: server.log().count("Application startup complete") == 2, what="2 workers")
    log = server.log()
    assert log.count("listening on") == 1
    assert f"listening on http://127.0.0.1:{server.port}/files/ (2 workers)" in log
    assert f"storage: {server.upload_dir}, registry {server.upload_dir / 'tusserver.db'}" in log
    assert f"extensions: {options.headers['Tus-Extension']}\n" in log
    assert "hooks: post-finish: file, http; pre-terminate: file, http" in log
    assert "processing: validate" in log and "metrics: /metrics, health: off" in log
    assert re.search(r"WARNING tusserver hook \S+pre-terminate is not executable", log)
    assert "; http http://127.0.0.1:9)\n" in log  # scheme, host and port only
    for secret in ("alice", "s3cret", "t0ken", "127.0.0.1:9/hook"):
        assert secret not in log, secret


def test_tls_upload_gets_https_locations(make_server: ServerFactory, tmp_path):
    """--tls-certificate/--tls-key: HTTPS straight from uvicorn, Location is https://."""
    cert, key = self_signed(tmp_path)
    server = make_server("--tls-certificate", str(cert), "--tls-key", str(key))
    url = f"https://127.0.0.1:{server.port}/files/"
    assert f"listening on {url}" in server.log()
    data = b"over tls " * 1000
    with httpx.Client(verify=ssl.create_default_context(cafile=str(cert))) as http:
        created = http.post(url, headers={**TUS, "Upload-Length": str(len(data))})
        assert created.status_code == 201
        location = created.headers["Location"]
        assert location.startswith(url)
        headers = {**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
        assert http.patch(location, content=data, headers=headers).status_code == 204
        assert http.get(location).content == data
