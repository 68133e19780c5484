"""Coordination across instances that share PostgreSQL: advisory locks and LISTEN/NOTIFY.

One dedicated connection per process (not from the registry's pool: session advisory locks and
LISTEN belong to a session, and a pooled connection changes hands) carries every advisory lock
of the process and its LISTEN. `PostgresCoordination.locker` and `.liveness` share it; asyncpg
allows one operation at a time on a connection, so each statement takes a short asyncio.Lock.
Each statement also runs as a task of its own that a cancelled caller does not stop: asyncpg
cancels a query by asking the server, after which nobody knows whether the lock was taken.

Keys: two-int4 advisory locks, `(UPLOADS, key(upload_id))` and `(OWNERS, key(token))`; a key is
the first 4 bytes of the id's blake2b. Two ids can share a key: whoever holds it excludes every
other session, so a collision only makes one upload wait for the other, never lets two writers
in (within one process colliding uploads do not even wait: the session's lock is re-entrant).

Session advisory locks are re-entrant, so the process's own holds are kept apart in an
in-process table (at most one local holder per upload): a local newcomer asks the local holder
directly and waits for it to leave, then takes the advisory lock. If another session holds it,
the newcomer sends `NOTIFY tusserver_release, '<upload_id>'` and tries again every
POLL_SECONDS until its timeout (then 423). Every process LISTENs on that channel and passes a
notification to its local holder of the upload as a release request, so a HEAD or PATCH on one
instance stops a stale PATCH on another within a fraction of a second.

Connection loss (server restart, network, pg_terminate_backend) releases every lock of the
session, so every holder gets a release request at once; hold() raises BackendUnavailable (503)
while a background task reconnects with backoff. The owner lock (liveness) is taken again on the
new session before it is used. Losses the client cannot see (a silent network partition) are
found by a heartbeat every HEARTBEAT_SECONDS, which fails after STATEMENT_SECONDS; the session's
TCP keepalives let the server drop it (and its locks) only after ~25 s without an answer, so
our holders are told to stop well before another instance can take their locks (a margin of
time, not a fencing token).

Deployment: PgBouncer in transaction or statement pooling mode breaks this (advisory session
locks and LISTEN would land on whatever server connection the next statement gets). Connect
directly, or through PgBouncer in session pooling mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any, TypeVar

import anyio
import asyncpg

from tusserver.coordination.base import Liveness, Locker, ReleaseRequest
from tusserver.errors import BackendUnavailable
from tusserver.protocol import TusError
from tusserver.startup import redact

log = logging.getLogger("tusserver.coordination")

T = TypeVar("T")

UPLOADS = 0x74757301  # advisory lock classes ("tus" 1, "tus" 2), apart from other users' keys
OWNERS = 0x74757302
CHANNEL = "tusserver_release"
POLL_SECONDS = 0.05
STATEMENT_SECONDS = 5.0
HEARTBEAT_SECONDS = 5.0
CONNECT_SECONDS = 5.0
RETRY_FIRST, RETRY_MAX = 0.1, 5.0

_TRY_LOCK = "SELECT pg_try_advisory_lock($1, $2)"
_UNLOCK = "SELECT pg_advisory_unlock($1, $2)"
_NOTIFY = "SELECT pg_notify($1, $2)"
# The keys among $2 nobody holds (taken and released at once: CASE keeps that order).
_FREE_KEYS = (
    "SELECT coalesce(array_agg(k), '{}') FROM unnest($2::int4[]) AS k"
    " WHERE CASE WHEN pg_try_advisory_lock($1, k) THEN pg_advisory_unlock($1, k) END"
)
# The server drops a silent session after 10 s + 3 x 5 s: well after our heartbeat noticed.
_KEEPALIVES = (
    "SELECT set_config('tcp_keepalives_idle', '10', false),"
    " set_config('tcp_keepalives_interval', '5', false),"
    " set_config('tcp_keepalives_count', '3', false)"
)


def key(text: str) -> int:
    """The stable signed 32-bit advisory lock key of an upload id or owner token."""
    digest = hashlib.blake2b(text.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def _locked() -> TusError:
    return TusError(423, "upload is locked by another request; retry later")


class PostgresCoordination:
    """The lock connection of this process, shared by its locker and liveness."""

    def __init__(self, url: str):
        self.url = url
        self.locker = PostgresLocker(self)
        self.liveness = PostgresLiveness(self)
        self.conn: Any = None  # the asyncpg connection while it is up
        self._use = asyncio.Lock()
        self._lost = asyncio.Event()
        self._users: set[object] = set()
        self._keeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def open(self, user: object) -> None:
        """Connect for the first user (locker or liveness); later ones share the connection."""
        if self._keeper is None:
            try:
                await self._connect()
            except Exception as exc:
                raise BackendUnavailable(
                    f"coordination database {redact(self.url)} unreachable: {exc}"
                ) from exc
            self._keeper = asyncio.get_running_loop().create_task(self._keep())
        self._users.add(user)

    async def release(self, user: object) -> None:
        """The user is done; the last one closes the connection (the server drops its locks)."""
        self._users.discard(user)
        if self._users or self._keeper is None:
            return
        keeper, self._keeper = self._keeper, None
        keeper.cancel()
        await asyncio.wait([keeper])
        conn = self.conn
        if conn is not None:
            self._detach(conn)
            with anyio.move_on_after(STATEMENT_SECONDS):
                async with self._use:  # after the statement in flight, if any
                    with contextlib.suppress(Exception):  # then close() has aborted it
                        await conn.close()
            if not conn.is_closed():
                conn.terminate()

    async def _connect(self) -> None:
        """Open and prepare a lock connection, then publish it as self.conn."""
        conn = await asyncpg.connect(
            self.url,
            timeout=CONNECT_SECONDS,
            server_settings={"application_name": "tusserver-coordination"},
        )
        try:
            conn.add_termination_listener(self._on_termination)
            with anyio.fail_after(STATEMENT_SECONDS):
                await conn.execute(_KEEPALIVES)
                await conn.add_listener(CHANNEL, self.locker.notified)
                await self.liveness.retake(conn)
        except BaseException:
            conn.terminate()
            raise
        self.conn = conn
        self._lost.clear()

    def _on_termination(self, conn: Any) -> None:
        """asyncpg saw the connection close (or a statement on it failed)."""
        if conn is self.conn:
            self._detach(conn)
            log.warning("lost the coordination connection to %s; reconnecting", redact(self.url))

    def _detach(self, conn: Any) -> None:
        """The connection is gone, and every lock of its session with it."""
        self.conn = None
        self._lost.set()
        self.locker.lost(conn)

    async def _keep(self) -> None:
        """Background: a heartbeat while connected, reconnecting with backoff while not."""
        delay = RETRY_FIRST
        while True:
            if self.conn is not None:
                delay = RETRY_FIRST
                with anyio.move_on_after(HEARTBEAT_SECONDS):
                    await self._lost.wait()
                if not self._lost.is_set():
                    await self._heartbeat()
                continue
            await anyio.sleep(delay)
            try:
                await self._connect()
            except Exception as exc:
                delay = min(delay * 2, RETRY_MAX)
                log.warning(
                    "coordination database %s unreachable (%s); retrying in %.1f s",
                    redact(self.url),
                    exc,
                    delay,
                )
            else:
                log.info("coordination connection to %s is back", redact(self.url))

    async def _heartbeat(self) -> None:
        """Drop the connection if a trivial statement does not come back in time (the only
        statement with a timeout: one on every lock would cost a timer each)."""
        conn = self.conn
        try:
            with anyio.fail_after(STATEMENT_SECONDS):
                await self.call("SELECT 1")
        except TimeoutError:
            conn.terminate()  # fails the statement stuck on it, if any
            self._on_termination(conn)
        except BackendUnavailable:
            pass

    async def call(
        self, sql: str, *args: object, undo: Callable[[tuple[Any, Any]], None] | None = None
    ) -> tuple[Any, Any]:
        """(value, connection) of one statement, which runs to its end even if the caller is
        cancelled: a cancelled lock statement would leave it unknown whether the session holds
        the lock. `undo` then gets the result of the statement whose caller left."""
        return await self.shielded(self._statement(sql, *args), undo)

    async def shielded(
        self, work: Coroutine[Any, Any, T], undo: Callable[[T], None] | None = None
    ) -> T:
        """Run `work` as its own task and wait for it (see call)."""
        task = self._spawn(work)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if undo is not None:
                task.add_done_callback(lambda done: _undo_success(done, undo))
            raise

    def background(self, sql: str, *args: object) -> None:
        """Run a statement nobody waits for."""
        self._spawn(self._statement(sql, *args))

    def _spawn(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._settled)
        return task

    def _settled(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that left does not care

    async def _statement(self, sql: str, *args: object) -> tuple[Any, Any]:
        async with self._use:
            conn = self.conn
            if conn is None:
                raise BackendUnavailable("coordination database unreachable; reconnecting")
            try:
                return await conn.fetchval(sql, *args), conn
            except Exception as exc:  # these statements cannot fail on data: the session did
                conn.terminate()
                self._on_termination(conn)
                raise BackendUnavailable(f"coordination connection failed: {exc}") from exc


def _undo_success(task: asyncio.Task[T], undo: Callable[[T], None]) -> None:
    if not task.cancelled() and task.exception() is None:
        undo(task.result())


class _Hold:
    """One local hold of an upload: from taking its place in the table until leaving."""

    __slots__ = ("asked", "conn", "inside", "left", "on_release_request")

    def __init__(self, on_release_request: ReleaseRequest | None):
        self.on_release_request = on_release_request
        self.asked = False
        self.inside = False
        self.conn: Any = None  # the session that holds the advisory lock
        self.left: asyncio.Event | None = None  # made by the first local waiter

    def ask(self) -> None:
        """A release request, delivered once while inside the block (now, or on entering), as
        a callback of the event loop: whatever the holder's callback does (or raises) stays
        out of the waiter, the listener or the connection code that asked."""
        if not self.asked:
            self.asked = True
            if self.inside:
                asyncio.get_running_loop().call_soon(self._deliver)

    def enter(self) -> None:
        self.inside = True
        if self.asked:
            asyncio.get_running_loop().call_soon(self._deliver)

    def _deliver(self) -> None:
        if self.inside and self.on_release_request is not None:
            self.on_release_request()

    def leave(self) -> None:
        if self.left is not None:
            self.left.set()

    async def wait_left(self) -> None:
        if self.left is None:
            self.left = asyncio.Event()
        await self.left.wait()


class PostgresLocker(Locker):
    """Upload locks: an in-process table in front of session advisory locks."""

    def __init__(self, coordination: PostgresCoordination):
        self._c = coordination
        self._held: dict[str, _Hold] = {}

    async def start(self) -> None:
        await self._c.open(self)

    async def close(self) -> None:
        await self._c.release(self)

    def check(self) -> None:
        """See Locker.check: no lock connection right now."""
        if self._c.conn is None:
            raise BackendUnavailable("coordination database unreachable; reconnecting")

    @contextlib.asynccontextmanager
    async def hold(
        self,
        upload_id: str,
        timeout: float,
        on_release_request: ReleaseRequest | None = None,
    ) -> AsyncIterator[None]:
        """See Locker.hold."""
        deadline = asyncio.get_running_loop().time() + timeout
        await self._wait_local(upload_id, deadline)
        k = key(upload_id)
        me = self._held[upload_id] = _Hold(on_release_request)
        try:
            me.conn = await self._lock(upload_id, k, deadline)
            me.enter()
            yield
        finally:
            me.inside = False
            try:
                if me.conn is not None and me.conn is self._c.conn:
                    with contextlib.suppress(BackendUnavailable):  # gone with the session
                        await self._c.call(_UNLOCK, UPLOADS, k)
            finally:
                del self._held[upload_id]
                me.leave()

    async def _wait_local(self, upload_id: str, deadline: float) -> None:
        """Ask this process's holder of the upload to let go and wait until it has."""
        loop = asyncio.get_running_loop()
        while (holder := self._held.get(upload_id)) is not None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise _locked()
            holder.ask()
            with anyio.move_on_after(remaining):
                await holder.wait_left()

    async def _lock(self, upload_id: str, k: int, deadline: float) -> Any:
        """Take the advisory lock `k` by `deadline` (asking its holder elsewhere to let go
        once); returns the session that holds it."""
        conn = await self._try(k)
        if conn is not None:
            return conn
        loop = asyncio.get_running_loop()
        if deadline <= loop.time():
            raise _locked()
        await self._c.call(_NOTIFY, CHANNEL, upload_id)
        while conn is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise _locked()
            await anyio.sleep(min(POLL_SECONDS, remaining))
            conn = await self._try(k)
        return conn

    async def _try(self, k: int) -> Any:
        def undo(result: tuple[Any, Any]) -> None:  # our caller left: give the lock back
            taken, conn = result
            if taken and conn is self._c.conn:
                self._c.background(_UNLOCK, UPLOADS, k)

        taken, conn = await self._c.call(_TRY_LOCK, UPLOADS, k, undo=undo)
        if not taken:
            return None
        if conn is not self._c.conn:  # lost while the answer was on its way
            raise BackendUnavailable("coordination connection lost")
        return conn

    def notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        """LISTEN callback: another session wants an upload (our own NOTIFYs are ignored)."""
        del channel
        if pid != conn.get_server_pid() and (holder := self._held.get(payload)) is not None:
            holder.ask()

    def lost(self, conn: Any) -> None:
        """The session `conn` is gone: its holders no longer hold their locks."""
        for holder in list(self._held.values()):
            if holder.conn is conn:
                holder.ask()


class PostgresLiveness(Liveness):
    """This process's owner token, held as an advisory lock on the lock connection."""

    def __init__(self, coordination: PostgresCoordination):
        self._c = coordination
        self.token = secrets.token_hex(8)
        self._running = False

    async def start(self) -> None:
        """Take our owner lock (another token if its key is a live owner's: keys collide)."""
        if self._running:
            return
        await self._c.open(self)
        while not await self._c.shielded(self._take()):
            self.token = secrets.token_hex(8)

    async def _take(self) -> bool:
        taken, _ = await self._c._statement(_TRY_LOCK, OWNERS, key(self.token))
        self._running = bool(taken)  # here, not in start(): holds even if start is cancelled
        return self._running

    async def retake(self, conn: Any) -> None:
        """On a new session, before it is used: hold our owner lock again."""
        if self._running and not await conn.fetchval(_TRY_LOCK, OWNERS, key(self.token)):
            # the previous session is not gone yet (the server drops it within ~25 s)
            raise BackendUnavailable("the owner lock is still held by the previous session")

    async def stop(self) -> None:
        """Release our owner lock (we read as dead from now on), then our connection use."""
        if self._running:
            self._running = False
            with contextlib.suppress(BackendUnavailable):
                await self._c.call(_UNLOCK, OWNERS, key(self.token))
        await self._c.release(self)

    async def dead(self, owners: Sequence[str]) -> list[str]:
        """The owners whose lock nobody holds. Not judged: our own token, tokens not of our
        form, tokens sharing our key (we hold it, so it would read free), and everything
        while the connection is down."""
        own = key(self.token)
        keys = {t: key(t) for t in owners if t != self.token and t.isalnum() and key(t) != own}
        if not keys:
            return []
        try:
            free, _ = await self._c.call(_FREE_KEYS, OWNERS, sorted(set(keys.values())))
        except BackendUnavailable:
            return []
        gone = set(free)
        return [t for t in owners if t in keys and keys[t] in gone]
