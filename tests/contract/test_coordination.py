"""The coordination contract (tusserver/coordination/base.py), checked against every
implementation: flock files on one host ("local") and PostgreSQL advisory locks ("postgres").

A "process" here is one Locker and one Liveness as a worker process (or an instance) builds
them: two FileLockers on one directory, or two PostgresCoordinations on one database, behave
as two processes. Tests wait on events with deadlines, never on sleeps; the only bounded waits
without an event check that something does *not* happen.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from tusserver.coordination.base import Liveness, Locker
from tusserver.protocol import TusError

pytestmark = pytest.mark.anyio

NOT_ASKED_WINDOW = 0.5  # several watch periods of the local locker, many NOTIFY round trips


@dataclass
class Process:
    locker: Locker
    liveness: Liveness


Make = Callable[[], Awaitable[Process]]


@pytest.fixture(params=["local", "postgres"])
async def make(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Make]:
    """Starts "processes" sharing one backend (a directory, a database); all are stopped at
    the end of the test."""
    started: list[Process] = []
    # the database is dropped after the processes stop (fixtures end in reverse order)
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else ""

    async def make_one() -> Process:
        if request.param == "local":
            from tusserver.coordination.local import FileLiveness, FileLocker

            process = Process(FileLocker(tmp_path), FileLiveness(tmp_path / ".locks"))
        else:
            from tusserver.coordination.postgres import PostgresCoordination

            coordination = PostgresCoordination(url)
            process = Process(coordination.locker, coordination.liveness)
        await process.locker.start()
        await process.liveness.start()
        started.append(process)
        return process

    yield make_one
    for process in reversed(started):
        await process.liveness.stop()
        await process.locker.close()


@pytest.fixture
async def process(make: Make) -> Process:
    return await make()


class Holder:
    """A request holding an upload in a task: `entered` once inside, `asked` when a release
    request arrives; it leaves on `asked` if obedient, else when told to (`leave`)."""

    def __init__(self, locker: Locker, upload_id: str, *, obedient: bool = True):
        self.locker = locker
        self.upload_id = upload_id
        self.obedient = obedient
        self.entered = anyio.Event()
        self.asked = anyio.Event()
        self.leave = anyio.Event()
        self.left = anyio.Event()
        self.calls = 0

    def on_release_request(self) -> None:
        self.calls += 1
        self.asked.set()
        if self.obedient:
            self.leave.set()

    async def run(self) -> None:
        try:
            async with self.locker.hold(self.upload_id, 5, self.on_release_request):
                self.entered.set()
                await self.leave.wait()
        finally:
            self.left.set()


async def start_holder(
    tg: anyio.abc.TaskGroup, locker: Locker, upload_id: str = "u1", *, obedient: bool = True
) -> Holder:
    holder = Holder(locker, upload_id, obedient=obedient)
    tg.start_soon(holder.run)
    with anyio.fail_after(5):
        await holder.entered.wait()
    return holder


async def assert_locked(locker: Locker, upload_id: str = "u1") -> None:
    with pytest.raises(TusError) as caught:
        async with locker.hold(upload_id, 0):
            pass
    assert caught.value.status == 423


async def test_hold_is_exclusive_until_left(process: Process) -> None:
    async with anyio.create_task_group() as tg:
        holder = await start_holder(tg, process.locker, obedient=False)
        await assert_locked(process.locker)
        holder.leave.set()
    async with process.locker.hold("u1", 0):
        pass


async def test_waiter_asks_holder_and_gets_the_lock(process: Process) -> None:
    async with anyio.create_task_group() as tg:
        holder = await start_holder(tg, process.locker)
        with anyio.fail_after(5):
            async with process.locker.hold("u1", 5):
                assert holder.asked.is_set()
                assert holder.left.is_set()
    assert holder.calls == 1


async def test_timeout_answers_423_and_the_holder_keeps_the_lock(process: Process) -> None:
    async with anyio.create_task_group() as tg:
        holder = await start_holder(tg, process.locker, obedient=False)
        with pytest.raises(TusError) as caught:
            async with process.locker.hold("u1", 0.3):
                pass
        assert caught.value.status == 423
        assert holder.asked.is_set()
        assert not holder.left.is_set()
        await assert_locked(process.locker)
        holder.leave.set()


async def test_timeout_zero_sends_no_release_request(make: Make) -> None:
    first, second = await make(), await make()
    async with anyio.create_task_group() as tg:
        holder = await start_holder(tg, first.locker)
        await assert_locked(first.locker)
        await assert_locked(second.locker)
        with anyio.move_on_after(NOT_ASKED_WINDOW):
            await holder.asked.wait()
        assert not holder.asked.is_set()
        holder.leave.set()


async def test_different_uploads_do_not_block_each_other(process: Process) -> None:
    with anyio.fail_after(5):
        async with process.locker.hold("u1", 0), process.locker.hold("u2", 0):
            pass


async def test_a_cancelled_waiter_leaves_nothing_locked(process: Process) -> None:
    async with anyio.create_task_group() as tg:
        holder = await start_holder(tg, process.locker, obedient=False)
        waiter_started = anyio.Event()

        async def waiter() -> None:
            waiter_started.set()
            async with process.locker.hold("u1", 5):
                pytest.fail("the holder never leaves while the waiter waits")

        async with anyio.create_task_group() as waiting:
            waiting.start_soon(waiter)
            with anyio.fail_after(5):
                await waiter_started.wait()
                await holder.asked.wait()
            waiting.cancel_scope.cancel()
        holder.leave.set()
    async with process.locker.hold("u1", 0):
        pass


async def test_two_processes_exclude_each_other_and_ask_across(make: Make) -> None:
    first, second = await make(), await make()
    async with anyio.create_task_group() as tg:
        holder = await start_holder(tg, first.locker)
        await assert_locked(second.locker)
        started = anyio.current_time()
        async with second.locker.hold("u1", 5):
            waited = anyio.current_time() - started
            assert holder.left.is_set()
            await assert_locked(first.locker)
    assert waited < 1.0
    async with first.locker.hold("u1", 0):
        pass


async def test_a_holder_that_ignores_another_process_keeps_the_lock(make: Make) -> None:
    first, second = await make(), await make()
    async with anyio.create_task_group() as tg:
        holder = await start_holder(tg, first.locker, obedient=False)
        with pytest.raises(TusError):
            async with second.locker.hold("u1", 0.3):
                pass
        assert holder.asked.is_set()
        await assert_locked(second.locker)
        holder.leave.set()
    async with second.locker.hold("u1", 0):
        pass


async def test_forgotten_and_created_uploads_can_be_held(process: Process, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(b"")
    await anyio.to_thread.run_sync(process.locker.created, "u1", data)
    await anyio.to_thread.run_sync(process.locker.created, "u2", None)
    async with process.locker.hold("u1", 0), process.locker.hold("u2", 0):
        pass
    await process.locker.forget("u1")
    await process.locker.forget("never-held")
    async with process.locker.hold("u1", 0):
        pass


async def test_a_live_owner_is_not_dead_and_a_stopped_one_is(make: Make) -> None:
    first, second = await make(), await make()
    assert await first.liveness.dead([second.liveness.token]) == []
    await second.liveness.stop()
    assert await first.liveness.dead([second.liveness.token]) == [second.liveness.token]


async def test_self_is_never_dead(process: Process) -> None:
    assert await process.liveness.dead([process.liveness.token]) == []
    await process.liveness.start()  # idempotent
    assert await process.liveness.dead([process.liveness.token]) == []


async def test_unknown_owners(make: Make) -> None:
    first, second = await make(), await make()
    gone = secrets.token_hex(8)
    owners = [gone, second.liveness.token, "", "host:123:abc", first.liveness.token]
    assert await first.liveness.dead(owners) == [gone]
    assert await first.liveness.dead([]) == []
