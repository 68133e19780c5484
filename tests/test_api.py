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
from tusserver.config import Settings, flag_name, parse_duration, parse_size


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
    with pytest.raises(SystemExit):
        settings_from([], {"TUSSERVER_MAX_SIZE": "lots"})
    assert "TUSSERVER_MAX_SIZE" in capsys.readouterr().err


def test_units():
    assert parse_duration("24h") == 86400
    assert parse_duration("250ms") == 0.25
    assert parse_duration("0") == 0
    assert parse_size("512M") == 512 * 1024**2
    for bad in ("1x", "h", "-5"):
        with pytest.raises(ValueError):
            parse_duration(bad) if bad != "-5" else parse_size(bad)


def test_settings_roundtrip_for_workers():
    settings = Settings(upload_dir=Path("/tmp/x"), max_size=10, base_path="up")
    again = Settings.from_json(settings.to_json())
    assert again == settings and again.base_path == "/up/"


def test_help_and_readme_document_every_flag():
    """Every Settings field is a flag in `tusserver --help` and a row of the README table."""
    out = subprocess.run(
        [sys.executable, "-m", "tusserver", "--help"], capture_output=True, text=True, check=True
    ).stdout
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for f in fields(Settings):
        flag = flag_name(f.name)
        assert flag in out, flag
        assert f"| `{flag}` |" in readme, flag
