"""PostgreSQL-specific behaviour of PostgresRegistry (the generic behaviour every registry shares
is tests/contract/test_registry.py): versioned migrations under concurrent start-up, leases
timed by the database's clock, real concurrency between instances (separate pools), the
registry's own connection pool (reads gathered while it is busy, cancelled statements, clears
of pending finishes gathered), and the database going away and coming back.

Each test gets a fresh database on the session's server (`pg_url`); the restart test stops and
starts that server, and always starts it again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import anyio
import asyncpg
import pytest
from conftest import free_port
from pgserver import PostgresServer

from tusserver.errors import BackendUnavailable
from tusserver.registry import postgres
from tusserver.registry.base import (
    ACTIVE,
    COMPLETE,
    TERMINATED,
    NewDelivery,
    Part,
    UploadInfo,
)
from tusserver.registry.postgres import MIGRATIONS, PostgresRegistry, redacted

pytestmark = pytest.mark.anyio

T = TypeVar("T")
SECRET = "pw-Sekr1t"
REAL_TIME = time.time


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def registry(pg_url: str) -> AsyncIterator[PostgresRegistry]:
    opened = PostgresRegistry(pg_url, pool_size=4)
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
async def sql(pg_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own, to inspect the database or hold locks in it."""
    connection = await asyncpg.connect(pg_url)
    yield connection
    await connection.close()


async def eventually(check: Callable[[], Awaitable[T]], what: str, timeout: float = 10.0) -> T:
    """Poll `check` until it returns something truthy (and return that)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await anyio.sleep(0.02)


def async_value(get: Callable[[], T]) -> Callable[[], Awaitable[T]]:
    """`get` as a coroutine function, for `eventually`."""

    async def value() -> T:
        return get()

    return value


async def waiting_on_lock(sql: asyncpg.Connection) -> bool:
    """Whether some other backend of this database waits for a lock."""
    return bool(
        await sql.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
    )


def lock_free(sql: asyncpg.Connection) -> Callable[[], Awaitable[bool]]:
    """For `eventually`: no other backend of this database waits for a lock any more."""

    async def free() -> bool:
        return not await waiting_on_lock(sql)

    return free


def with_password(url: str) -> str:
    """The URL with a password (the test server trusts loopback, so it is never checked)."""
    return url.replace("postgres@", f"postgres:{SECRET}@")


def record_queries(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements of every connection asyncpg makes from now on (the registry's pool)."""
    queries: list[str] = []
    connect = asyncpg.connect

    async def logged(*args: object, **kwargs: object) -> asyncpg.Connection:
        connection = await connect(*args, **kwargs)
        connection.add_query_logger(lambda record: queries.append(record.query))
        return connection

    monkeypatch.setattr(asyncpg, "connect", logged)
    return queries


def skew_clock(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """This process's wall clock, off by `seconds` (the database's is not)."""
    monkeypatch.setattr(time, "time", lambda: REAL_TIME() + seconds)


# -- migrations ------------------------------------------------------------------------------


async def test_instances_starting_at_once_migrate_once(
    pg_url: str, sql: asyncpg.Connection
) -> None:
    """The advisory lock serializes the migrations: the steps' plain CREATE TABLEs would fail
    if two instances applied them."""
    registries = [PostgresRegistry(pg_url, pool_size=2) for _ in range(4)]
    async with anyio.create_task_group() as tasks:
        for registry in registries:
            tasks.start_soon(registry.open)
    try:
        versions = await sql.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [row[0] for row in versions] == list(range(1, len(MIGRATIONS) + 1))
        await registries[0].create(UploadInfo(id="u1", length=5))
        for registry in registries:
            assert (await registry.get("u1")) is not None
    finally:
        for registry in registries:
            await registry.close()


async def applied(sql: asyncpg.Connection) -> list[tuple[int, object]]:
    rows = await sql.fetch("SELECT version, applied_at FROM schema_migrations ORDER BY version")
    return [(row[0], row[1]) for row in rows]


async def test_reopening_applies_only_new_steps(
    pg_url: str, sql: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = PostgresRegistry(pg_url)
    await first.open()
    await first.create(UploadInfo(id="kept", length=1))
    await first.close()
    before = await applied(sql)

    monkeypatch.setattr(postgres, "MIGRATIONS", (*MIGRATIONS, "CREATE TABLE newer (x int)"))
    second = PostgresRegistry(pg_url)
    await second.open()
    try:
        after = await applied(sql)
        assert after[: len(before)] == before  # applied once, never again
        assert [version for version, _ in after[len(before) :]] == [len(MIGRATIONS) + 1]
        assert await sql.fetchval("SELECT to_regclass('newer') IS NOT NULL")
        assert (await second.get("kept")) is not None
    finally:
        await second.close()


async def test_a_database_of_the_previous_schema_is_migrated(
    pg_url: str, sql: asyncpg.Connection
) -> None:
    """Uploads completed before the pending-finish mark existed are not pending; uploads that
    complete afterwards are."""
    await sql.execute(MIGRATIONS[0])
    await sql.execute(
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY,"
        " applied_at timestamptz NOT NULL DEFAULT now()); INSERT INTO schema_migrations VALUES (1)"
    )
    await sql.execute(
        'INSERT INTO uploads (id, length, "offset", created, updated, state) VALUES'
        " ('done', 10, 10, 1, 2, 'complete'), ('open', 10, 0, 1, 2, 'active')"
    )
    registry = PostgresRegistry(pg_url)
    await registry.open()
    try:
        assert await registry.pending_finishes(0) == []
        assert await registry.set_offset(
            "open", expected=0, offset=10, expires=None, state=COMPLETE
        )
        assert await registry.pending_finishes(0) == ["open"]
    finally:
        await registry.close()


async def test_parts_of_an_earlier_release_keep_their_numbers(
    pg_url: str, sql: asyncpg.Connection
) -> None:
    """Parts recorded before part numbers were reserved: the counter starts after the highest
    recorded number (none is handed out again), their checksum is None."""
    await sql.execute(MIGRATIONS[0])
    for step in MIGRATIONS[1:3]:
        await sql.execute(step)
    await sql.execute(
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY,"
        " applied_at timestamptz NOT NULL DEFAULT now());"
        " INSERT INTO schema_migrations VALUES (1), (2), (3)"
    )
    await sql.execute(
        'INSERT INTO uploads (id, length, "offset", created, updated, state) VALUES'
        " ('old', 100, 20, 1, 2, 'active'), ('bare', 10, 0, 1, 2, 'active');"
        " INSERT INTO upload_parts VALUES ('old', 1, 'e1', 10), ('old', 2, 'e2', 10)"
    )
    registry = PostgresRegistry(pg_url)
    await registry.open()
    try:
        assert await registry.parts("old") == [Part(1, "e1", 10), Part(2, "e2", 10)]
        assert await registry.reserve_part("old") == 3
        assert await registry.reserve_part("bare") == 1
    finally:
        await registry.close()


# -- leases by the database's clock ----------------------------------------------------------


async def lease_left(sql: asyncpg.Connection, table: str, key: str | int) -> float:
    """Seconds until the row's lease lapses, by the database's clock."""
    return float(
        await sql.fetchval(
            f"SELECT extract(epoch FROM lease_until - now()) FROM {table} WHERE id = $1", key
        )
    )


async def test_job_leases_follow_the_database_clock(
    registry: PostgresRegistry, sql: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller whose clock runs an hour ahead neither takes a live lease for lapsed nor
    grants one that lapses early; one running an hour behind still sees a short lease lapse."""
    for name in ("long", "short"):
        assert await registry.create_job(name, ["p"], 1)

    skew_clock(monkeypatch, 3600)
    long = await registry.claim_next_job("owner-a", lease=30)
    assert long is not None and long.id == "long"
    assert 25 < await lease_left(sql, "jobs", "long") <= 30
    assert await registry.requeue_lapsed_jobs() == []
    assert await registry.job_progress(
        "long", long.run, bytes_done=1, records=1, progress={}, error_count=0, lease=60
    )
    assert 55 < await lease_left(sql, "jobs", "long") <= 60

    skew_clock(monkeypatch, -3600)
    short = await registry.claim_next_job("owner-b", lease=0.2)
    assert short is not None and short.id == "short"
    assert await lease_left(sql, "jobs", "short") <= 0.2
    assert await eventually(registry.requeue_lapsed_jobs, "the short lease to lapse") == ["short"]
    assert await registry.requeue_lapsed_jobs() == []


async def test_delivery_leases_and_retries_follow_the_database_clock(
    registry: PostgresRegistry, sql: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = [NewDelivery("post-finish", "http", "u1", "{}")]
    skew_clock(monkeypatch, 3600)
    [held] = await registry.add_deliveries(new, "owner-a", lease=30)
    assert 25 < await lease_left(sql, "hook_deliveries", held) <= 30
    assert await registry.due_deliveries(everything=True) == []
    assert await registry.delivery_owners() == ["owner-a"]
    assert await registry.claim_delivery(held, "owner-b", lease=30) is None
    # a retry 30 s from now (by the database) is not due, however far ahead this clock is
    assert await registry.settle_delivery(held, 1, "pending", retry_in=30, error="503")
    assert await registry.due_deliveries() == []
    assert [d.id for d in await registry.due_deliveries(everything=True)] == [held]

    skew_clock(monkeypatch, -3600)
    [short] = await registry.add_deliveries(new, "owner-c", lease=0.2)

    async def due() -> list[int]:
        return [d.id for d in await registry.due_deliveries()]

    assert await eventually(due, "the short delivery lease to lapse") == [short]
    claimed = await registry.claim_delivery(short, "owner-d", lease=30)
    assert claimed is not None and claimed.attempts == 2 and claimed.owner == "owner-d"
    assert await registry.settle_delivery(short, 2, "pending", retry_in=0.2)
    assert await eventually(due, "the short retry delay to pass") == [short]


# -- concurrency between instances -----------------------------------------------------------


async def test_racing_instances_claim_each_job_once(
    pg_url: str, registry: PostgresRegistry
) -> None:
    other = PostgresRegistry(pg_url, pool_size=4)
    await other.open()
    try:
        for number in range(40):
            await registry.create_job(f"job{number:02}", ["p"], 1)
        claims: list[str] = []

        async def worker(instance: PostgresRegistry, owner: str) -> None:
            while (job := await instance.claim_next_job(owner, lease=30)) is not None:
                claims.append(job.id)

        async with anyio.create_task_group() as tasks:
            for number in range(8):
                tasks.start_soon(worker, (registry, other)[number % 2], f"owner{number}")
        assert sorted(claims) == [f"job{number:02}" for number in range(40)]
    finally:
        await other.close()


async def test_racing_requeues_return_each_job_once(
    pg_url: str, registry: PostgresRegistry
) -> None:
    other = PostgresRegistry(pg_url, pool_size=4)
    await other.open()
    try:
        for number in range(20):
            await registry.create_job(f"job{number:02}", ["p"], 1)
            assert await registry.claim_next_job("dead", lease=300) is not None
        results: list[list[str]] = []

        async def requeue(instance: PostgresRegistry) -> None:
            results.append(await instance.requeue_lapsed_jobs(["dead"]))

        async with anyio.create_task_group() as tasks:
            for number in range(6):
                tasks.start_soon(requeue, (registry, other)[number % 2])
        requeued = [job for result in results for job in result]
        assert sorted(requeued) == [f"job{number:02}" for number in range(20)]
    finally:
        await other.close()


async def test_racing_offset_writers_one_wins(pg_url: str, registry: PostgresRegistry) -> None:
    other = PostgresRegistry(pg_url, pool_size=4)
    await other.open()
    try:
        await registry.create(UploadInfo(id="u1", length=100))
        wins: list[int] = []

        async def write(instance: PostgresRegistry, offset: int) -> None:
            if await instance.set_offset(
                "u1", expected=0, offset=offset, expires=None, state=ACTIVE
            ):
                wins.append(offset)

        async with anyio.create_task_group() as tasks:
            for offset in range(1, 11):
                tasks.start_soon(write, (registry, other)[offset % 2], offset)
        assert len(wins) == 1
        info = await other.get("u1")
        assert info is not None and info.offset == wins[0]
    finally:
        await other.close()


async def test_report_rows_never_outlive_a_termination_they_race(
    registry: PostgresRegistry, sql: asyncpg.Connection
) -> None:
    """add_job_errors waits for a termination in flight (its row lock), then writes nothing:
    rows written after the trigger queued the purge would never be deleted."""
    await registry.create(UploadInfo(id="u1", length=1))
    await registry.create_job("u1", ["p"], 1)
    job = await registry.claim_next_job("owner", lease=30)
    assert job is not None
    written: list[bool] = []

    async def add() -> None:
        written.append(await registry.add_job_errors("u1", job.run, [("p", 1, "k", "m", "e")]))

    async with anyio.create_task_group() as tasks, sql.transaction():
        await sql.execute("UPDATE uploads SET state = $1 WHERE id = 'u1'", TERMINATED)
        tasks.start_soon(add)
        await eventually(lambda: waiting_on_lock(sql), "add_job_errors to wait for the lock")
    assert written == [False]
    assert await sql.fetchval("SELECT count(*) FROM job_errors") == 0


async def test_parts_never_outlive_a_termination_they_race(
    registry: PostgresRegistry, sql: asyncpg.Connection
) -> None:
    """A set_offset with parts that waits for a termination in flight (its row lock) re-checks
    the state once it commits: the offset is refused, and the parts with it."""
    await registry.create(UploadInfo(id="u1", length=10))
    moved: list[bool] = []

    async def write() -> None:
        moved.append(
            await registry.set_offset(
                "u1",
                expected=0,
                offset=10,
                expires=None,
                state=COMPLETE,
                parts=[Part(1, "e1", 10, "c1")],
                store_ref="mp",
            )
        )

    async with anyio.create_task_group() as tasks, sql.transaction():
        await sql.execute("UPDATE uploads SET state = $1 WHERE id = 'u1'", TERMINATED)
        tasks.start_soon(write)
        await eventually(lambda: waiting_on_lock(sql), "set_offset to wait for the lock")
    assert moved == [False]
    assert await sql.fetchval("SELECT count(*) FROM upload_parts") == 0
    info = await registry.get("u1")
    assert info is not None and (info.offset, info.store_ref) == (0, None)


async def test_set_offset_is_one_statement_with_or_without_parts(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hot path of small uploads stays one round trip; parts add no second one."""
    queries = record_queries(monkeypatch)
    registry = PostgresRegistry(pg_url, pool_size=1)
    await registry.open()
    try:
        await registry.create(UploadInfo(id="u1", length=20))
        # asyncpg looks up the array types of the parts' columns on a connection's first use
        await registry.set_offset(
            "u1", expected=0, offset=0, expires=None, state=ACTIVE, parts=[Part(1, "e", 0)]
        )
        await anyio.sleep(0)  # asyncpg logs a query in a callback of the next loop iteration
        queries.clear()
        assert await registry.set_offset("u1", expected=0, offset=5, expires=None, state=ACTIVE)
        assert await registry.set_offset(
            "u1", expected=5, offset=20, expires=None, state=ACTIVE, parts=[Part(1, "e", 20)]
        )
        await anyio.sleep(0)
        assert queries == [postgres._SET_OFFSET, postgres._SET_OFFSET_WITH_PARTS]
    finally:
        await registry.close()


# -- the pool and the statements it gathers ---------------------------------------------------


async def occupy(
    registry: PostgresRegistry, sql: asyncpg.Connection, tasks: anyio.abc.TaskGroup
) -> None:
    """Make the registry's only connection wait: a set_state of "a" behind `sql`'s row lock
    (inside a transaction of `sql`; it goes on once that ends)."""
    await sql.execute("SELECT 1 FROM uploads WHERE id = 'a' FOR UPDATE")
    tasks.start_soon(registry.set_state, "a", TERMINATED)
    await eventually(lambda: waiting_on_lock(sql), "set_state to wait for the lock")


async def test_reads_waiting_for_a_connection_go_as_one_statement(
    pg_url: str, sql: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each reader gets its own info (fresh as of after its call), an unknown id None."""
    queries = record_queries(monkeypatch)
    registry = PostgresRegistry(pg_url, pool_size=1)
    await registry.open()
    try:
        for name in ("a", "b"):
            await registry.create(UploadInfo(id=name, length=10))
        got: dict[int, UploadInfo | None] = {}

        async def read(number: int, upload_id: str) -> None:
            got[number] = await registry.get(upload_id)

        queries.clear()
        async with anyio.create_task_group() as tasks, sql.transaction():
            await occupy(registry, sql, tasks)
            for number, upload_id in enumerate(("a", "b", "a", "unknown")):
                tasks.start_soon(read, number, upload_id)
            await anyio.wait_all_tasks_blocked()
        first, second, again, unknown = (got[number] for number in range(4))
        assert first is not None and first.state == TERMINATED  # read after set_state
        assert second is not None and second.id == "b"
        assert again == first and again is not first
        assert unknown is None
        assert queries.count(postgres._GET_MANY) == 1 and postgres._GET not in queries
    finally:
        await registry.close()


async def test_a_cancelled_read_leaves_the_reads_that_joined_it_their_rows(
    pg_url: str, sql: asyncpg.Connection
) -> None:
    registry = PostgresRegistry(pg_url, pool_size=1)
    await registry.open()
    try:
        for name in ("a", "b"):
            await registry.create(UploadInfo(id=name, length=10))
        got: list[str] = []

        async def read(upload_id: str) -> None:
            info = await registry.get(upload_id)
            assert info is not None
            got.append(info.id)

        async with anyio.create_task_group() as tasks, sql.transaction():
            await occupy(registry, sql, tasks)
            async with anyio.create_task_group() as first:
                first.start_soon(read, "a")  # the first waiting read: it reads for all
                await anyio.wait_all_tasks_blocked()
                tasks.start_soon(read, "b")
                await anyio.wait_all_tasks_blocked()
                first.cancel_scope.cancel()
        assert got == ["b"]
    finally:
        await registry.close()


async def test_a_statement_cancelled_while_it_waits_is_cancelled_in_the_database(
    registry: PostgresRegistry, sql: asyncpg.Connection
) -> None:
    """Not left running on a dropped connection: it would commit after its caller was told it
    failed."""
    await registry.create(UploadInfo(id="a", length=10))

    async def not_waiting() -> bool:
        return not await waiting_on_lock(sql)

    async with sql.transaction():
        async with anyio.create_task_group() as tasks:
            await occupy(registry, sql, tasks)
            tasks.cancel_scope.cancel()
        await eventually(not_waiting, "the cancelled statement to stop waiting")
    info = await registry.get("a")
    assert info is not None and info.state == ACTIVE


async def test_clears_of_pending_finishes_are_gathered(
    pg_url: str, registry: PostgresRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One statement for the clears of a moment; pending_finishes waits for those asked for,
    and so does close (nothing is left pending for the repair)."""
    queries = record_queries(monkeypatch)
    other = PostgresRegistry(pg_url, pool_size=2)
    await other.open()
    try:
        for name in ("a", "b", "c", "d"):
            await other.create(UploadInfo(id=name, length=0, state=COMPLETE))
        for name in ("a", "b", "c"):
            await other.finish_recorded(name)
        assert await other.pending_finishes(0) == ["d"]
        assert sum("SET finish_pending = false" in query for query in queries) == 1
        await other.finish_recorded("d")
    finally:
        await other.close()
    assert await registry.pending_finishes(0) == []


# -- the database going away -----------------------------------------------------------------


async def test_calls_fail_while_the_server_is_down_and_work_once_it_is_back(
    postgres: PostgresServer, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """BackendUnavailable (never the password) while the server is stopped; the same registry
    works again after it restarted, without being reopened: the pool replaces dead
    connections by itself."""
    caplog.set_level(logging.DEBUG)
    registry = PostgresRegistry(with_password(pg_url), pool_size=3)
    await registry.open()
    try:
        await registry.create(UploadInfo(id="u1", length=10))
        try:
            await anyio.to_thread.run_sync(postgres.stop)
            failures: list[BackendUnavailable] = []
            for call in (
                registry.ping(),
                registry.get("u1"),
                registry.set_offset("u1", expected=0, offset=5, expires=None, state=ACTIVE),
                registry.claim_next_job("owner", lease=30),
            ):
                with pytest.raises(BackendUnavailable) as raised:
                    await call
                failures.append(raised.value)
        finally:
            await anyio.to_thread.run_sync(postgres.start)
        for failure in failures:
            assert SECRET not in str(failure) and SECRET not in repr(failure.__cause__)
            assert redacted(pg_url) in str(failure)

        async def offset_written() -> bool:
            try:
                return await registry.set_offset(
                    "u1", expected=0, offset=5, expires=None, state=ACTIVE
                )
            except BackendUnavailable:
                return False

        await eventually(offset_written, "the registry to work again")
        info = await registry.get("u1")
        assert info is not None and info.offset == 5
        await registry.ping()
    finally:
        await registry.close()
    assert SECRET not in caplog.text  # asyncpg logs its own reconnection attempts


async def test_unreachable_database_at_start(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    registry = PostgresRegistry(f"postgresql://tus:{SECRET}@127.0.0.1:{port}/tus?sslmode=disable")
    with pytest.raises(BackendUnavailable) as failure:
        await registry.open()
    assert f"PostgreSQL registry postgresql://127.0.0.1:{port}/tus unavailable" in str(
        failure.value
    )
    assert isinstance(failure.value.__cause__, OSError)
    assert SECRET not in str(failure.value) and SECRET not in caplog.text


async def test_pool_exhausted_or_statement_too_slow_is_unavailable(
    pg_url: str, sql: asyncpg.Connection
) -> None:
    """A connection that is not free within acquire_timeout, or a statement that runs past
    command_timeout (here: stuck behind a row lock), answers 503 rather than hanging the
    request; the registry works normally afterwards."""
    registry = PostgresRegistry(pg_url, pool_size=1, acquire_timeout=0.2, command_timeout=1.5)
    await registry.open()
    try:
        await registry.create(UploadInfo(id="u1", length=10))
        stuck: list[BaseException] = []

        async def set_state() -> None:
            with pytest.raises(BackendUnavailable) as failure:
                await registry.set_state("u1", TERMINATED)
            stuck.append(failure.value)

        async with anyio.create_task_group() as tasks, sql.transaction():
            await sql.execute("SELECT 1 FROM uploads WHERE id = 'u1' FOR UPDATE")
            tasks.start_soon(set_state)
            await eventually(lambda: waiting_on_lock(sql), "set_state to wait for the lock")
            with pytest.raises(BackendUnavailable) as exhausted:
                await registry.get("u1")
            assert isinstance(exhausted.value.__cause__, TimeoutError)
            await eventually(async_value(lambda: stuck), "set_state to time out")
            # The client gave up at once; the server cancels the statement a moment later.
            # Releasing the row lock before that would let the UPDATE through after all.
            await eventually(lock_free(sql), "the timed-out statement to be cancelled")
        assert isinstance(stuck[0].__cause__, TimeoutError)
        info = await registry.get("u1")
        assert info is not None and info.state == ACTIVE
    finally:
        await registry.close()


def test_redacted_url_keeps_only_scheme_host_port_and_database() -> None:
    url = f"postgresql://tus:{SECRET}@db.internal:5433/uploads?sslpassword={SECRET}"
    assert redacted(url) == "postgresql://db.internal:5433/uploads"
    assert redacted(f"host=db password={SECRET}") == "***"
