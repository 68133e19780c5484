"""The one place that maps settings to backend implementations.

Core, handlers, hooks and processing see only the interfaces (`Store`, `Registry`, `Locker`,
`Liveness`); adding a backend means a new module per interface, a branch here and a parameter
in the contract tests. Implementations are imported lazily, so the embedded default never
imports a database driver it does not use.
"""

from __future__ import annotations

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
        """Connect and migrate (in the event loop that will use them)."""
        await self.registry.open()
        await self.locker.start()
        await self.liveness.start()

    async def close(self) -> None:
        """Disconnect, in reverse order."""
        await self.liveness.stop()
        await self.locker.close()
        await self.registry.close()


def build(settings: Settings) -> Backends:
    """The backends `settings` asks for (nothing is connected yet: see Backends.start)."""
    from tusserver.storage.file import FileStore

    store = FileStore(settings.upload_dir)
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
