"""A host Starlette application that mounts tusserver under a sub-path (Python API example)."""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from tusserver import Settings, create_app


async def home(request: object) -> PlainTextResponse:
    return PlainTextResponse("host app")


def build() -> Starlette:
    """uvicorn factory: upload dir from the environment so tests can isolate it."""
    settings = Settings(upload_dir=Path(os.environ["MOUNT_TEST_DIR"]), base_path="/files/")
    return Starlette(
        routes=[Route("/", home), Mount("/api/tus", app=create_app(settings))],
    )
