"""The one place that maps settings to backend implementations.

Core, handlers, hooks and processing see only the interfaces (`Store`, `Registry`, `Locker`,
`Liveness`); adding a backend means a new module per interface, a branch here and a parameter
in the contract tests. Implementations are imported lazily, so the embedded default never
imports a database driver it does not use.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from tusserver.config import Settings
from tusserver.coordination.base import Liveness, Locker
from tusserver.registry.base import Registry
from tusserver.storage.base import Store


@dataclass
class Backends:
    """The backends of one worker process."""

    store: Store
    registry: Registry
    locker: Locker
    liveness: Liveness

    async def start(self) -> None:
        """Connect and migrate (in the event loop that will use them). If one of them fails,
        those already connected are closed again, so a later attempt starts from scratch."""
        try:
            await self.registry.open()
            await self.locker.start()
            await self.liveness.start()
        except BaseException:
            with contextlib.suppress(Exception):  # the start's own error says more
                await self.close()
            raise

    async def close(self) -> None:
        """Disconnect, in reverse order: every backend, even if one of them fails (the first
        failure is raised afterwards). Safe on backends never started, or closed already."""
        failure: Exception | None = None
        for close in (self.liveness.stop, self.locker.close, self.registry.close):
            try:
                await close()
            except Exception as exc:
                failure = failure or exc
        try:
            self.store.close()
        except Exception as exc:
            failure = failure or exc
        if failure is not None:
            raise failure


def build(settings: Settings) -> Backends:
    """The backends `settings` asks for (nothing is connected yet: see Backends.start)."""
    store = build_store(settings)
    if settings.db_is_postgres:
        from tusserver.coordination.postgres import PostgresCoordination
        from tusserver.registry.postgres import PostgresRegistry

        assert settings.db is not None
        coordination = PostgresCoordination(settings.db)
        return Backends(
            store=store,
            registry=PostgresRegistry(settings.db, pool_size=settings.db_pool_size),
            locker=coordination.locker,
            liveness=coordination.liveness,
        )
    from tusserver.coordination.local import FileLiveness, FileLocker
    from tusserver.registry.sqlite import SqliteRegistry

    return Backends(
        store=store,
        registry=SqliteRegistry(settings.db_path),
        locker=FileLocker(settings.upload_dir),
        liveness=FileLiveness(settings.upload_dir / ".locks"),
    )


def build_store(settings: Settings) -> Store:
    """The store alone (what the start-up banner asks about: its capabilities)."""
    if settings.uses_s3:
        from tusserver.storage.s3 import S3Store

        return S3Store(settings)
    from tusserver.storage.file import FileStore

    return FileStore(settings.upload_dir)
