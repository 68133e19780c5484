"""PostgreSQL coordination beyond the contract: lock operations of concurrent requests sharing
statements, cancellation at any point, the lock connection dropping (the server terminates it)
and a real second process on the same database.

To hold an instance in the disconnected state for as long as a test needs, its database stops
accepting connections (ALLOW_CONNECTIONS false) before its session is terminated; the test
lets it back in when it wants the reconnect.
"""

from __future__ import annotations

import asyncio
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

from tusserver.coordination.postgres import OWNERS, UPLOADS, PostgresCoordination, key
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


def async_value(get: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """`get` as a coroutine function, for `eventually`."""

    async def value() -> bool:
        return get()

    return value


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    """Wait until `check()` holds, asking again each time the previous answer came back."""
    with anyio.fail_after(timeout):
        while not await check():
            await anyio.sleep(0.02)


async def holds(coordination: PostgresCoordination, upload_id: str = "u1") -> bool:
    """Whether the instance can take the upload now (False while it is locked or
    unreachable)."""
    try:
        async with coordination.locker.hold(upload_id, 0):
            return True
    except (BackendUnavailable, TusError):
        return False


# -- statements shared, cancellation ---------------------------------------------------------


async def test_concurrent_holds_share_statements(
    make: Callable[[], Awaitable[PostgresCoordination]],
) -> None:
    """The locks of requests that arrive together go in one statement, and so do their
    unlocks; every hold is still exclusive against another instance."""
    instance, other = await make(), await make()
    statements: list[str] = []
    instance.conn.add_query_logger(lambda record: statements.append(record.query))
    entered = 0
    leave = anyio.Event()

    async def hold(number: int) -> None:
        nonlocal entered
        async with instance.locker.hold(f"u{number}", 5):
            entered += 1
            await leave.wait()

    async with anyio.create_task_group() as tasks:
        for number in range(20):
            tasks.start_soon(hold, number)
        await eventually(async_value(lambda: entered == 20))
        for number in range(20):
            assert not await holds(other, f"u{number}")
        leave.set()
    assert len(statements) <= 4
    for number in range(20):
        assert await holds(other, f"u{number}")


async def assert_nothing_locked(
    instance: PostgresCoordination, other: PostgresCoordination
) -> None:
    """ "u1" is free for `other` once every statement `instance` had queued is answered (its
    lock of "u2" goes after them, its unlock waits for them)."""
    assert await holds(instance, "u2")
    assert await holds(other)


class CancelOnAnswer:
    """The coordination's loop, but every future it makes cancels `victim` when it is
    answered, before the victim can see the answer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, victim: asyncio.Task[object]):
        self._loop = loop
        self._victim = victim

    def create_future(self) -> asyncio.Future[object]:
        future = self._loop.create_future()
        future.add_done_callback(lambda _: self._victim.cancel())
        return future

    def __getattr__(self, name: str) -> object:
        return getattr(self._loop, name)


@pytest.mark.parametrize("when", ["before the answer", "after the answer"])
async def test_a_lock_taken_for_a_cancelled_caller_is_given_back(
    make: Callable[[], Awaitable[PostgresCoordination]], when: str
) -> None:
    instance, other = await make(), await make()
    loop = instance.loop
    caller = loop.create_task(instance.try_lock(UPLOADS, key("u1")))
    if when == "after the answer":
        instance.loop = CancelOnAnswer(loop, caller)  # type: ignore[assignment]
    else:
        await asyncio.sleep(0)  # the caller has queued its lock
        caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    instance.loop = loop
    await assert_nothing_locked(instance, other)


async def test_a_hold_cancelled_at_any_point_leaves_nothing_locked(
    make: Callable[[], Awaitable[PostgresCoordination]],
) -> None:
    """Cancelled after 0, 1, 2, ... turns of the event loop: while queued, in flight, answered,
    inside, or leaving."""
    instance, other = await make(), await make()

    async def hold() -> None:
        async with instance.locker.hold("u1", 5):
            await anyio.sleep_forever()

    for turns in range(30):
        task = instance.loop.create_task(hold())
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await assert_nothing_locked(instance, other)


# -- the lock connection dropping ------------------------------------------------------------


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
