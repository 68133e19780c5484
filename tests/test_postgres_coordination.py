"""PostgreSQL coordination beyond the contract: the lock connection dropping (the server
terminates it) and a real second process on the same database.

To hold an instance in the disconnected state for as long as a test needs, its database stops
accepting connections (ALLOW_CONNECTIONS false) before its session is terminated; the test
lets it back in when it wants the reconnect.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import pytest
from pgserver import PostgresServer

from tusserver.coordination.postgres import OWNERS, PostgresCoordination, key
from tusserver.errors import BackendUnavailable
from tusserver.protocol import TusError

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def make(pg_url: str) -> AsyncIterator[Callable[[], Awaitable[PostgresCoordination]]]:
    """Starts coordinations (instances) on the test's database; stopped at the end."""
    started: list[PostgresCoordination] = []

    async def make_one() -> PostgresCoordination:
        coordination = PostgresCoordination(pg_url)
        await coordination.locker.start()
        await coordination.liveness.start()
        started.append(coordination)
        return coordination

    yield make_one
    for coordination in reversed(started):
        await coordination.liveness.stop()
        await coordination.locker.close()


class Database:
    """Server-side control of the test's database, run through psql off the event loop."""

    def __init__(self, postgres: PostgresServer, url: str):
        self.postgres = postgres
        self.name = url.rsplit("/", 1)[1]

    async def sql(self, statement: str) -> str:
        return await anyio.to_thread.run_sync(self.postgres.psql, statement)

    async def allow_connections(self, allow: bool) -> None:
        await self.sql(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS {str(allow).lower()}')

    async def terminate_session_of(self, coordination: PostgresCoordination) -> None:
        """End the lock session of one instance: the one holding its owner lock."""
        objid = key(coordination.liveness.token) & 0xFFFFFFFF  # pg_locks shows oids
        terminated = await self.sql(
            "SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_database d"
            f" ON d.oid = l.database WHERE d.datname = '{self.name}'"
            f" AND l.locktype = 'advisory' AND l.classid = {OWNERS} AND l.objid = {objid}"
            " AND l.objsubid = 2"
        )
        assert terminated == "t"


@pytest.fixture
def database(postgres: PostgresServer, pg_url: str) -> Database:
    return Database(postgres, pg_url)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    """Wait until `check()` holds, asking again each time the previous answer came back."""
    with anyio.fail_after(timeout):
        while not await check():
            await anyio.sleep(0.02)


async def test_lost_connection_stops_holders_and_answers_503_until_back(
    make: Callable[[], Awaitable[PostgresCoordination]], database: Database
) -> None:
    instance, other = await make(), await make()
    asked = anyio.Event()
    left = anyio.Event()

    async def holder() -> None:
        async with instance.locker.hold("u1", 5, asked.set):
            entered.set()
            await asked.wait()
        left.set()

    entered = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        with anyio.fail_after(5):
            await entered.wait()
        await database.allow_connections(False)
        await database.terminate_session_of(instance)
        with anyio.fail_after(5):
            await left.wait()

    with pytest.raises(BackendUnavailable):
        async with instance.locker.hold("u2", 1):
            pass
    with pytest.raises(BackendUnavailable):  # what the readiness probe asks
        instance.locker.check()
    # the lock went with the session (once the server has ended it)
    await eventually(lambda: holds(other))

    await database.allow_connections(True)
    await eventually(lambda: holds(instance))
    instance.locker.check()
    async with instance.locker.hold("u1", 0):  # exclusive again across instances
        with pytest.raises(TusError):
            async with other.locker.hold("u1", 0):
                pass


async def holds(coordination: PostgresCoordination) -> bool:
    """Whether the instance can take "u1" now (False while it is locked or unreachable)."""
    try:
        async with coordination.locker.hold("u1", 0):
            return True
    except (BackendUnavailable, TusError):
        return False


async def test_an_instance_whose_session_ended_reads_dead_until_it_is_back(
    make: Callable[[], Awaitable[PostgresCoordination]], database: Database
) -> None:
    instance, observer = await make(), await make()
    token = instance.liveness.token
    assert await observer.liveness.dead([token]) == []

    await database.allow_connections(False)
    await database.terminate_session_of(instance)

    async def reads_dead() -> bool:
        return await observer.liveness.dead([token]) == [token]

    await eventually(reads_dead)
    assert await instance.liveness.dead([token]) == []  # never self, connected or not

    await database.allow_connections(True)

    async def reads_alive() -> bool:
        return await observer.liveness.dead([token]) == []

    await eventually(reads_alive)  # the owner lock was taken again on the new session


async def test_colliding_keys_only_make_uploads_wait(
    make: Callable[[], Awaitable[PostgresCoordination]],
) -> None:
    """Two uploads whose keys collide: one instance holds both (its session takes the key
    twice), another waits until both are left; nobody gets an upload twice."""
    one, two = "upload-12600", "upload-38559"
    assert key(one) == key(two)
    instance, other = await make(), await make()
    async with instance.locker.hold(one, 0):
        async with instance.locker.hold(two, 0):
            with pytest.raises(TusError):
                async with other.locker.hold(two, 0):
                    pass
        with pytest.raises(TusError):  # still held under `one`
            async with other.locker.hold(two, 0):
                pass
        with pytest.raises(TusError):
            async with instance.locker.hold(one, 0):
                pass
    async with other.locker.hold(two, 0):
        with pytest.raises(TusError):
            async with instance.locker.hold(one, 0):
                pass


async def test_the_password_is_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    coordination = PostgresCoordination(f"postgresql://tus:s3cret-pw@127.0.0.1:{port}/db")
    with pytest.raises(BackendUnavailable) as caught:
        await coordination.locker.start()
    assert "127.0.0.1" in str(caught.value)
    assert "s3cret-pw" not in str(caught.value) + repr(caught.value.__cause__) + caplog.text


HOLDER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from tusserver.coordination.postgres import PostgresCoordination

    async def main(url):
        coordination = PostgresCoordination(url)
        await coordination.locker.start()
        asked = asyncio.Event()
        async with coordination.locker.hold("shared", 5, asked.set):
            print("holding", flush=True)
            await asked.wait()
            print("asked", flush=True)
        await coordination.locker.close()
        print("released", flush=True)

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_release_request_reaches_another_process(
    make: Callable[[], Awaitable[PostgresCoordination]], pg_url: str
) -> None:
    instance = await make()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", HOLDER_SCRIPT, pg_url]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as process:
        assert process.stdout is not None
        try:
            with anyio.fail_after(30):
                assert await anyio.to_thread.run_sync(process.stdout.readline) == "holding\n"
            with pytest.raises(TusError):
                async with instance.locker.hold("shared", 0):
                    pass
            started = anyio.current_time()
            async with instance.locker.hold("shared", 5):
                waited = anyio.current_time() - started
            assert waited < 1.0
            with anyio.fail_after(10):
                rest = await anyio.to_thread.run_sync(process.stdout.read)
            assert rest == "asked\nreleased\n"
            assert process.wait(10) == 0
        finally:
            process.kill()
