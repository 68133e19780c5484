"""The app in-process behind httpx's ASGI transport, for tests that replace or break a piece of
the core (a failing store call, a registry that fails once) and so cannot use a server process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from conftest import TUS

from tusserver.app import create_app
from tusserver.config import Settings
from tusserver.core import TusCore

OCTET = {**TUS, "Content-Type": "application/offset+octet-stream"}


@asynccontextmanager
async def serving(
    tmp_path: Path, **values: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, TusCore]]:
    """A client of a fresh app on `tmp_path/up` (settings `values`), and its core; the core's
    background work and backends are stopped at the end."""
    settings = Settings(upload_dir=tmp_path / "up", **values)
    core = TusCore(settings)
    transport = httpx.ASGITransport(app=create_app(settings, core))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://tus") as client:
            yield client, core
    finally:
        await core.stop_background()
