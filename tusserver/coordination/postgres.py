"""Coordination across instances that share PostgreSQL: advisory locks and LISTEN/NOTIFY.

One dedicated connection per process (not from the registry's pool: session advisory locks and
LISTEN belong to a session, and a pooled connection changes hands) carries every advisory lock
of the process and its LISTEN. `PostgresCoordination.locker` and `.liveness` share it. asyncpg
allows one operation at a time on a connection, and every lock and unlock of every request
would otherwise queue for it one round trip at a time: instead one sender task (alive while
there is work) sends all lock operations queued while the previous statement was in flight as
ONE statement, answered in request order. Callers wait on futures, and a cancelled caller never
stops a statement (asyncpg cancels a query by asking the server, after which nobody knows
whether the lock was taken): a lock taken for a caller that left is given back. hold() returns
once its unlock is applied, so another instance can take the upload as soon as the response
is out.

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
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import asyncpg

from tusserver.coordination.base import Liveness, Locker, ReleaseRequest
from tusserver.errors import BackendUnavailable
from tusserver.protocol import TusError
from tusserver.startup import redact

log = logging.getLogger("tusserver.coordination")

UPLOADS = 0x74757301  # advisory lock classes ("tus" 1, "tus" 2), apart from other users' keys
OWNERS = 0x74757302
CHANNEL = "tusserver_release"
POLL_SECONDS = 0.05
STATEMENT_SECONDS = 5.0
HEARTBEAT_SECONDS = 5.0
CONNECT_SECONDS = 5.0
RETRY_FIRST, RETRY_MAX = 0.1, 5.0

_TRY_LOCK = "SELECT pg_try_advisory_lock($1, $2)"
# Lock operations of many requests in one statement: (class, key, take or unlock) each, run and
# answered in request order (the function scan yields rows in ordinality order, no sort).
_BATCH = (
    "SELECT CASE WHEN take THEN pg_try_advisory_lock(cls, k) ELSE pg_advisory_unlock(cls, k) END"
    " FROM unnest($1::int4[], $2::int4[], $3::bool[]) WITH ORDINALITY AS op(cls, k, take, n)"
    " ORDER BY n"
)
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


# A queued lock operation: class, key, take (else unlock), and the future of whoever waits for
# it (None: nobody); another statement: SQL, arguments, future.
_Op = tuple[int, int, bool, asyncio.Future[Any] | None]
_Query = tuple[str, tuple[object, ...], asyncio.Future[Any]]


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
        # the loop of the process, set by open() (asyncio.get_running_loop() costs a getpid
        # system call each time)
        self.loop: asyncio.AbstractEventLoop
        self._lost = asyncio.Event()
        self._users: set[object] = set()
        self._keeper: asyncio.Task[None] | None = None
        self._ops: list[_Op] = []  # lock operations for the next batch, in request order
        self._queries: deque[_Query] = deque()  # other statements, one at a time
        self._sender: asyncio.Task[None] | None = None  # while there is something to send

    async def open(self, user: object) -> None:
        """Connect for the first user (locker or liveness); later ones share the connection."""
        if self._keeper is None:
            self.loop = asyncio.get_running_loop()
            try:
                await self._connect()
            except Exception as exc:
                raise BackendUnavailable(
                    f"coordination database {redact(self.url)} unreachable: {exc}"
                ) from exc
            self._keeper = self.loop.create_task(self._keep())
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
                if self._sender is not None:  # the statement in flight, if any, ends first
                    await asyncio.wait([self._sender])
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
        """The connection is gone, and every lock of its session with it: what waits to be
        sent on it fails (unlocks too, which the session's end did)."""
        self.conn = None
        self._lost.set()
        ops, self._ops = self._ops, []
        queries, self._queries = self._queries, deque()
        for *_, future in ops:
            _fail(future, "coordination connection lost")
        for *_, future in queries:
            _fail(future, "coordination connection lost")
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

    # -- statements: every one goes through the sender, which a cancelled caller never stops
    # (asyncpg cancels a query by asking the server, after which nobody knows whether a lock
    # was taken) --------------------------------------------------------------------------

    async def try_lock(self, cls: int, k: int) -> Any:
        """The session now holding lock (cls, k), or None if another session holds it.

        Sent with the next batch. A caller cancelled before the answer leaves the lock to the
        sender to give back; one cancelled after it gives the lock back itself."""
        future = self._queue(cls, k, True)
        try:
            conn = await future
        except asyncio.CancelledError:
            if (got := _outcome(future)) is not None:
                self._give_back(cls, k, got)
            raise
        if conn is not None and conn is not self.conn:  # lost while the answer was on its way
            raise BackendUnavailable("coordination connection lost")
        return conn

    async def unlock(self, cls: int, k: int, conn: Any) -> None:
        """Give lock (cls, k) of session `conn` back and wait until it is, or until the
        session is gone (which gave it back)."""
        if conn is self.conn:
            with contextlib.suppress(BackendUnavailable):
                await self._queue(cls, k, False)

    def _give_back(self, cls: int, k: int, conn: Any) -> None:
        """Give lock (cls, k) of session `conn` back with the next batch, waiting for nothing."""
        if conn is self.conn:
            self._ops.append((cls, k, False, None))
            self._wake()

    def require_connection(self) -> None:
        """BackendUnavailable (503) while there is no lock connection (it is reconnecting)."""
        if self.conn is None:
            raise BackendUnavailable("coordination database unreachable; reconnecting")

    def _queue(self, cls: int, k: int, take: bool) -> asyncio.Future[Any]:
        self.require_connection()
        future = self.loop.create_future()
        self._ops.append((cls, k, take, future))
        self._wake()
        return future

    async def call(self, sql: str, *args: object) -> Any:
        """The value of one statement, which runs to its end even if the caller leaves."""
        self.require_connection()
        future = self.loop.create_future()
        self._queries.append((sql, args, future))
        self._wake()
        return await future

    def _wake(self) -> None:
        if self._sender is None:
            self._sender = self.loop.create_task(self._send())

    async def _send(self) -> None:
        """Background while there is work: all lock operations queued meanwhile as one
        statement, then one other statement, and again, until nothing is left to send."""
        try:
            while (conn := self.conn) is not None and (self._ops or self._queries):
                if self._ops:
                    ops, self._ops = self._ops, []
                    await self._batch(conn, ops)
                if self._queries and conn is self.conn:
                    await self._query(conn, *self._queries.popleft())
        finally:
            self._sender = None

    async def _batch(self, conn: Any, ops: list[_Op]) -> None:
        """Run lock operations in request order and answer their callers (those who left get
        nothing: a lock taken for one is given back)."""
        classes, keys, takes, futures = zip(*ops, strict=True)
        try:
            rows = await conn.fetch(_BATCH, classes, keys, takes)
        except Exception as exc:
            self._broken(conn)
            for future in futures:
                _fail(future, f"coordination connection failed: {exc}")
            return
        lost = conn is not self.conn
        for (cls, k, take, future), (done,) in zip(ops, rows, strict=True):
            if future is None:
                continue
            if not future.done():
                if lost:
                    _fail(future, "coordination connection lost")
                else:
                    future.set_result(conn if done else None)
            elif take and done and not lost:  # its caller left: give the lock back
                self._ops.append((cls, k, False, None))  # with the next batch (this loop)

    async def _query(
        self, conn: Any, sql: str, args: tuple[object, ...], future: asyncio.Future[Any]
    ) -> None:
        try:
            value = await conn.fetchval(sql, *args)
        except Exception as exc:
            self._broken(conn)
            _fail(future, f"coordination connection failed: {exc}")
            return
        if not future.done():
            future.set_result(value)

    def _broken(self, conn: Any) -> None:
        """A statement failed: these cannot fail on data, so the session did."""
        conn.terminate()
        self._on_termination(conn)


def _fail(future: asyncio.Future[Any] | None, message: str) -> None:
    if future is not None and not future.done():
        future.set_exception(BackendUnavailable(message))


def _outcome(future: asyncio.Future[Any]) -> Any:
    """The result of a future whose waiter was cancelled, if it had one (an exception is
    retrieved: nobody else will)."""
    if not future.done() or future.cancelled() or future.exception() is not None:
        return None
    return future.result()


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
        self._c.require_connection()

    @contextlib.asynccontextmanager
    async def hold(
        self,
        upload_id: str,
        timeout: float,
        on_release_request: ReleaseRequest | None = None,
    ) -> AsyncIterator[None]:
        """See Locker.hold."""
        self._c.require_connection()
        deadline = self._c.loop.time() + timeout
        await self._wait_local(upload_id, deadline)
        k = key(upload_id)
        me = self._held[upload_id] = _Hold(on_release_request)
        try:
            me.conn = await self._lock(upload_id, k, deadline)
            me.enter()
            yield
        finally:
            me.inside = False
            del self._held[upload_id]
            me.leave()  # a local waiter's lock can go in the batch of our unlock
            if me.conn is not None:
                await self._c.unlock(UPLOADS, k, me.conn)

    async def _wait_local(self, upload_id: str, deadline: float) -> None:
        """Ask this process's holder of the upload to let go and wait until it has."""
        while (holder := self._held.get(upload_id)) is not None:
            remaining = deadline - self._c.loop.time()
            if remaining <= 0:
                raise _locked()
            holder.ask()
            with anyio.move_on_after(remaining):
                await holder.wait_left()

    async def _lock(self, upload_id: str, k: int, deadline: float) -> Any:
        """Take the advisory lock `k` by `deadline` (asking its holder elsewhere to let go
        once); returns the session that holds it."""
        conn = await self._c.try_lock(UPLOADS, k)
        if conn is not None:
            return conn
        loop = self._c.loop
        if deadline <= loop.time():
            raise _locked()
        await self._c.call(_NOTIFY, CHANNEL, upload_id)
        while conn is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise _locked()
            await anyio.sleep(min(POLL_SECONDS, remaining))
            conn = await self._c.try_lock(UPLOADS, k)
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
        while await self._c.try_lock(OWNERS, key(self.token)) is None:
            self.token = secrets.token_hex(8)
        self._running = True

    async def retake(self, conn: Any) -> None:
        """On a new session, before it is used: hold our owner lock again."""
        if self._running and not await conn.fetchval(_TRY_LOCK, OWNERS, key(self.token)):
            # the previous session is not gone yet (the server drops it within ~25 s)
            raise BackendUnavailable("the owner lock is still held by the previous session")

    async def stop(self) -> None:
        """Release our owner lock (we read as dead from now on), then our connection use."""
        if self._running:
            self._running = False
            await self._c.unlock(OWNERS, key(self.token), self._c.conn)
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
            free = await self._c.call(_FREE_KEYS, OWNERS, sorted(set(keys.values())))
        except BackendUnavailable:
            return []
        gone = set(free)
        return [t for t in owners if t in keys and keys[t] in gone]
