"""Fixtures of the contract suites: one parameter per implementation, built lazily, so a
backend's driver and services are touched only by the tests that use it (`-k sqlite`)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tusserver.registry.base import Registry

RegistryFactory = Callable[[], Registry]


@pytest.fixture
def anyio_backend() -> str:
    """The contract tests run on asyncio, the server's event loop."""
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgres"])
def registry_backend(request: pytest.FixtureRequest) -> str:
    """Which registry implementation the test runs against."""
    return str(request.param)


@pytest.fixture
def registry_factory(
    registry_backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> RegistryFactory:
    """Builds unopened registries on one fresh database: several of them are several
    instances (or worker processes) sharing it."""
    if registry_backend == "sqlite":
        from tusserver.registry.sqlite import SqliteRegistry

        path = tmp_path / "registry.db"
        return lambda: SqliteRegistry(path)
    from tusserver.registry.postgres import PostgresRegistry

    url = request.getfixturevalue("pg_url")
    return lambda: PostgresRegistry(url, pool_size=4)


@pytest.fixture
def unreachable_registry(registry_backend: str, tmp_path: Path) -> Registry:
    """A registry whose database cannot be used: a directory where the SQLite file should
    be; a PostgreSQL port nobody listens on."""
    if registry_backend == "sqlite":
        from tusserver.registry.sqlite import SqliteRegistry

        return SqliteRegistry(tmp_path)
    from tusserver.registry.postgres import PostgresRegistry

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return PostgresRegistry(f"postgresql://postgres@127.0.0.1:{port}/postgres", pool_size=1)


@pytest.fixture
async def registry(registry_factory: RegistryFactory) -> AsyncIterator[Registry]:
    """An open registry on a fresh database, closed after the test."""
    opened = registry_factory()
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
