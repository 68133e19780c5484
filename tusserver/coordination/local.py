"""Coordination on one host: flock-based upload locks and owner liveness.

Locks: each upload has a lock file under `<upload-dir>/.locks/`; holding it means holding an
exclusive flock, which the kernel releases if the process dies, so a crash never leaves a
stuck lock. For FileStore uploads the lock file is a second name (hard link) of the data file,
made when the upload is created, so taking a lock never allocates an inode (FileLocker.created).

Release requests: a request that finds the upload locked writes its token into
`<id>.release`. The holder's locker checks that file every WATCH_SECONDS and calls the
holder's `on_release_request`; the holder stops reading its body, saves what it received and
leaves; the newcomer then gets the lock within a fraction of a second (tusd v2 does the same).
A waiter withdraws its request however it stops waiting (granted, timed out, cancelled). One
that cannot (SIGKILL) leaves its token behind: a holder ignores the request that was already
there before it took the lock (it reads the file once before locking), so such a leftover
never interrupts later uploads; the next waiter's request replaces it.

Liveness: each process flocks `<upload-dir>/.locks/owner-<token>.owner` while it lives. The
kernel drops the flock when the process dies (even on SIGKILL), so another process finds the
lock free and knows the owner is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import os
import secrets
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio

from tusserver.coordination.base import Liveness, Locker, ReleaseRequest
from tusserver.protocol import TusError

POLL_SECONDS = 0.05
WATCH_SECONDS = 0.1
# Owner files of the version before coordination/ (hooks' OwnerLock): still judged and swept.
_OWNER_PREFIXES = ("owner-", "hooks-")


class FileLocker(Locker):
    """Per-upload flocks in `<upload_dir>/.locks/`, shared by every process on the host."""

    def __init__(self, upload_dir: Path):
        self.directory = upload_dir / ".locks"
        self.directory.mkdir(parents=True, exist_ok=True)
        self._prefix = os.path.join(self.directory, "")  # plain strings: hold() runs per request

    async def start(self) -> None:
        """Nothing to connect: the directory exists from construction."""

    async def close(self) -> None:
        """Nothing to close: each hold closes its own file."""

    def _paths(self, upload_id: str) -> tuple[str, str]:
        return f"{self._prefix}{upload_id}.lock", f"{self._prefix}{upload_id}.release"

    @contextlib.asynccontextmanager
    async def hold(
        self,
        upload_id: str,
        timeout: float,
        on_release_request: ReleaseRequest | None = None,
    ) -> AsyncIterator[None]:
        """Hold the upload's flock for the block (see Locker.hold); watch for release requests
        while inside if the holder wants them."""
        lock_path, release_path = self._paths(upload_id)
        token = _new_token()
        # A request posted before we lock asked an earlier holder (or its waiter died): not
        # ours to answer. Read before locking, so a request posted after it never counts as
        # stale; only a holder that watches needs it (one failed open, mostly).
        stale = _requester(release_path) if on_release_request is not None else None
        fd = await _open_lock_file(lock_path)
        try:
            if not _try_flock(fd):  # taken: ask the holder to let go, wait, then withdraw
                await _acquire(fd, release_path, token, timeout)
            # Granted at once: we posted no release request, so there is none of ours to clear.
            watch = None
            if on_release_request is not None:
                watch = _Watch(release_path, (token, stale), on_release_request)
            try:
                yield
            finally:
                if watch is not None:
                    watch.cancel()
        finally:
            os.close(fd)  # closing the fd drops the flock

    def created(self, upload_id: str, local_path: Path | None) -> None:
        """Make the upload's lock file a second name of its (new) data file.

        A hard link allocates no inode: creating a fresh lock file for every upload measured
        as a sixth of the server's CPU in ext4's inode allocator with many small uploads. The
        flock is the same either way (taken on the lock file's name, released by the kernel),
        and forget() drops the name with the upload. Best effort: without it (no hard links
        on this file system, a store without local files, an upload from before) hold()
        creates a plain lock file.
        """
        if local_path is not None:
            with contextlib.suppress(OSError):
                os.link(local_path, self._paths(upload_id)[0])

    async def forget(self, upload_id: str) -> None:
        """Remove the lock and release files of an upload that no longer exists."""
        for path in self._paths(upload_id):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


class _Watch:
    """Checks the release file every WATCH_SECONDS and calls the holder back once.

    A timer callback on the event loop, not a task: this runs for every PATCH, and a watcher
    task (start, sleep, cancel) measured as a tenth of the small-upload CPU time. A small body
    is done before the first check is due, so all it costs is one timer set and cancelled.
    """

    __slots__ = ("_callback", "_ignored", "_loop", "_path", "_timer")

    def __init__(
        self, release_path: str, ignored: tuple[str | None, ...], callback: ReleaseRequest
    ):
        self._path = release_path
        self._ignored = ignored  # our own token, and the request that predates our lock
        self._callback = callback
        self._loop = asyncio.get_running_loop()
        self._timer = self._loop.call_later(WATCH_SECONDS, self._check)

    def _check(self) -> None:
        if _asked_to_release(self._path, self._ignored):
            self._callback()
        else:
            self._timer = self._loop.call_later(WATCH_SECONDS, self._check)

    def cancel(self) -> None:
        self._timer.cancel()


async def _acquire(fd: int, release_path: str, token: str, timeout: float) -> None:
    """The flock is taken: post a release request and poll until granted. The request is
    withdrawn however this ends: granted, timed out, or cancelled (the client went away, the
    server stops), so no request of ours outlives the wait."""
    if timeout <= 0:  # a non-waiting caller (expiry cleanup) never interrupts a holder
        raise TusError(423, "upload is locked by another request; retry later")
    _write_release(release_path, token)
    try:
        with anyio.move_on_after(timeout):
            while True:
                await anyio.sleep(POLL_SECONDS)
                if _try_flock(fd):
                    return
    finally:
        _clear_release(release_path, token)
    raise TusError(423, "upload is locked by another request; retry later")


async def _open_lock_file(path: str) -> int:
    """Open the lock file; if it must be created, that is done on a worker thread.

    Creating a file (inode allocation, the journal that the fdatasync of every PATCH keeps
    busy) blocked the event loop, and so every request of the server, for up to ~1 ms: ~40%
    of the loop's time with 32 concurrent small uploads. Opening an existing name (the usual
    case: FileLocker.created linked it with the upload) is a plain lookup and stays inline.
    """
    try:
        return os.open(path, os.O_RDWR)
    except FileNotFoundError:
        pass
    future = asyncio.get_running_loop().run_in_executor(
        None, os.open, path, os.O_RDWR | os.O_CREAT, 0o644
    )
    try:
        return await asyncio.shield(future)
    except BaseException:  # cancelled while the thread runs: close the fd it opens
        future.add_done_callback(_close_opened)
        raise


def _close_opened(future: asyncio.Future[int]) -> None:
    if not future.cancelled() and future.exception() is None:
        os.close(future.result())


_TOKEN_PREFIX = secrets.token_hex(6)
_token_counter = itertools.count()


def _new_token() -> str:
    """A token unique to this hold: random per process, pid and a counter (no urandom call per
    request; the pid keeps forked workers apart even though they share the prefix)."""
    return f"{_TOKEN_PREFIX}-{os.getpid()}-{next(_token_counter)}"


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _requester(release_path: str) -> str | None:
    """The token of the request in the release file, if there is one (one read of a tiny
    file; a missing file is the usual case)."""
    try:
        with open(release_path) as file:
            return file.read() or None
    except OSError:
        return None


def _asked_to_release(release_path: str, ignored: tuple[str | None, ...]) -> bool:
    """Whether a request other than the `ignored` ones asks for the upload. Every request
    has a token of its own (a waiter writes once), so a new request never looks stale."""
    requester = _requester(release_path)
    return requester is not None and requester not in ignored


def _write_release(path: str, token: str) -> None:
    tmp = Path(path).with_suffix(f".{token}.tmp")
    tmp.write_text(token)
    os.replace(tmp, path)


def _clear_release(path: str, token: str) -> None:
    """Remove our own release request (never a newer requester's)."""
    with contextlib.suppress(OSError):
        if Path(path).read_text() == token:
            os.unlink(path)


class FileLiveness(Liveness):
    """This process's owner token: an flocked file in `directory` that vanishes with it."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.token = secrets.token_hex(8)
        self._fd: int | None = None

    def _path(self, token: str, prefix: str = _OWNER_PREFIXES[0]) -> Path:
        return self.directory / f"{prefix}{token}.owner"

    async def start(self) -> None:
        """Create and flock our file (once), then sweep the files of crashed runs."""
        if self._fd is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self._path(self.token)
        staging = final.with_suffix(".tmp")  # locked before it is visible: never "dead"
        fd = os.open(staging, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(staging, final)
        self._fd = fd
        leftovers = [
            path.name.removeprefix(prefix).removesuffix(".owner")
            for prefix in _OWNER_PREFIXES
            for path in self.directory.glob(f"{prefix}*.owner")
        ]
        await self.dead(leftovers)  # removes the files of the dead ones

    async def stop(self) -> None:
        """Clean shutdown: drop the file and the lock."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                self._path(self.token).unlink()
            os.close(fd)

    async def dead(self, owners: Sequence[str]) -> list[str]:
        """The owners whose lock is free or whose file is gone; their files are removed.

        A token that is not one of ours in form (not alphanumeric) is not judged.
        """
        return [
            token
            for token in owners
            if token != self.token and token.isalnum() and self._gone(token)
        ]

    def _gone(self, token: str) -> bool:
        for prefix in _OWNER_PREFIXES:
            path = self._path(token, prefix)
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            except OSError:
                return False
            try:
                if not _try_flock(fd):
                    return False
            finally:
                os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
        return True
