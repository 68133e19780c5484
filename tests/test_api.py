"""The Python front door: create_app mounted inside a host Starlette app, and settings."""

from __future__ import annotations

import io
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import httpx
import pytest
from tusclient import client as tus_client

from tusserver.cli import settings_from
from tusserver.config import (
    GROUPS,
    Settings,
    flag_name,
    format_duration,
    human_default,
    parse_duration,
    parse_size,
)


def test_mounted_under_sub_path(mounted_app):
    mounted = f"http://127.0.0.1:{mounted_app}"
    """Mounted at /api/tus: Location URLs carry the mount path and tuspy uploads through it."""
    data = b"mounted upload " * 1000
    uploader = tus_client.TusClient(f"{mounted}/api/tus/files/").uploader(
        file_stream=io.BytesIO(data), chunk_size=4096, metadata={"filename": "m.txt"}
    )
    uploader.upload()
    assert str(uploader.url).startswith(f"{mounted}/api/tus/files/")
    assert httpx.get(str(uploader.url)).content == data
    assert httpx.get(f"{mounted}/").text == "host app"


def test_flags_override_environment_and_defaults():
    """Precedence: flag > TUSSERVER_* variable > default; units parsed."""
    env = {"TUSSERVER_PORT": "9000", "TUSSERVER_MAX_SIZE": "5G", "TUSSERVER_BEHIND_PROXY": "yes"}
    settings = settings_from(["--port", "9100", "--expiration", "1h30m"], env)
    assert settings.port == 9100
    assert settings.max_size == 5 * 1024**3
    assert settings.behind_proxy is True
    assert settings.expiration == 5400
    assert settings.base_path == "/files/"
    assert settings_from([], {}).port == 8080


def test_bad_environment_value_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exited:
        settings_from([], {"TUSSERVER_MAX_SIZE": "lots"})
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "tusserver: TUSSERVER_MAX_SIZE: invalid size 'lots' (use bytes or e.g. 512M, 5G)\n"
    )


def test_units():
    assert parse_duration("24h") == 86400
    assert parse_duration("250ms") == 0.25
    assert parse_duration("0") == 0
    assert parse_size("512M") == 512 * 1024**2
    for bad in ("1x", "h", "-5"):
        with pytest.raises(ValueError):
            parse_duration(bad) if bad != "-5" else parse_size(bad)
    for bad in ("-5", "-1s", "nan", "inf", ""):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert [format_duration(s) for s in (86400, 5400, 60, 10, 0.25, 0)] == [
        "24h",
        "90m",
        "60s",
        "10s",
        "250ms",
        "0",
    ]
    assert all(parse_duration(format_duration(s)) == s for s in (86400, 5400, 60, 0.25, 0))


def test_settings_roundtrip_for_workers():
    settings = Settings(upload_dir=Path("/tmp/x"), max_size=10, base_path="up")
    again = Settings.from_json(settings.to_json())
    assert again == settings and again.base_path == "/up/"


def test_help_and_readme_document_every_flag():
    """Every Settings field is a flag in `tusserver --help` and a row of the README table, in
    the table of its --help section, with the default --help shows (human_default)."""
    out = subprocess.run(
        [sys.executable, "-m", "tusserver", "--help"], capture_output=True, text=True, check=True
    ).stdout
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    config = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    sections = dict(zip(GROUPS, config.split("\n**")[1:], strict=True))
    for f in fields(Settings):
        flag = flag_name(f.name)
        assert flag in out, flag
        shown = human_default(f)
        assert f"| `{flag}` | `{shown or '—'}` |" in readme, flag
        assert sections[f.metadata["group"]].startswith(f"{f.metadata['group']}**"), flag
        assert f"| `{flag}` |" in sections[f.metadata["group"]], flag
