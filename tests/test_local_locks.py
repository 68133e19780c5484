"""Release requests of the local (flock) locker never outlive the request that made them: a
waiter that is cancelled withdraws its request, and the request of one that was killed (it
cannot) does not interrupt the uploads that come after it.

Beyond the coordination contract (tests/contract/test_coordination.py): these are about the
release files of the local locker.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from tusserver.coordination import local
from tusserver.coordination.local import FileLocker

pytestmark = pytest.mark.anyio

CHECKS = 3  # watch periods a holder must go through unasked


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until `condition` holds (no sleeping as synchronisation)."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


def release_file(tmp_path: Path, upload_id: str = "u1") -> Path:
    return tmp_path / ".locks" / f"{upload_id}.release"


def count_checks(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Every release-file check of a holder's watch, with its answer."""
    checks: list[bool] = []
    real = local._asked_to_release

    def counted(path: str, ignored: tuple[str | None, ...]) -> bool:
        asked = real(path, ignored)
        checks.append(asked)
        return asked

    monkeypatch.setattr(local, "_asked_to_release", counted)
    return checks


async def test_a_cancelled_waiter_withdraws_its_release_request(tmp_path):
    locker = FileLocker(tmp_path)
    async with locker.hold("u1", 5):  # a holder that does not watch: it never lets go
        async with anyio.create_task_group() as waiting:

            async def waiter() -> None:
                async with locker.hold("u1", 30):
                    pytest.fail("the holder never leaves while the waiter waits")

            waiting.start_soon(waiter)
            await eventually(release_file(tmp_path).exists)
            waiting.cancel_scope.cancel()
        assert not release_file(tmp_path).exists()


async def holder_is_not_asked(locker: FileLocker, checks: list[bool]) -> None:
    """Hold u1 as an upload does (watching) through CHECKS watch periods: never asked; then
    a new waiter asks, and is heard."""
    asked = anyio.Event()
    async with anyio.create_task_group() as tg, locker.hold("u1", 5, asked.set):
        await eventually(lambda: len(checks) >= CHECKS)
        assert not asked.is_set() and not any(checks)

        async def newcomer() -> None:
            async with locker.hold("u1", 5):
                pass

        tg.start_soon(newcomer)
        with anyio.fail_after(5):
            await asked.wait()


async def test_a_leftover_release_request_does_not_interrupt_later_uploads(tmp_path, monkeypatch):
    """A release request left behind (its waiter died) was there before the holder took the
    lock: the holder ignores it, but hears the next waiter."""
    locker = FileLocker(tmp_path)
    local._write_release(str(release_file(tmp_path)), "dead-waiter")
    checks = count_checks(monkeypatch)
    await holder_is_not_asked(locker, checks)


async def test_the_request_of_a_killed_waiter_does_not_interrupt_later_uploads(
    tmp_path, monkeypatch
):
    """A waiter in another process is killed with SIGKILL while it waits: its request stays
    in the file, and the upload after it runs uninterrupted."""
    locker = FileLocker(tmp_path)
    waiter = (
        "import sys, anyio\n"
        "from pathlib import Path\n"
        "from tusserver.coordination.local import FileLocker\n"
        "async def main():\n"
        "    async with FileLocker(Path(sys.argv[1])).hold('u1', 60):\n"
        "        pass\n"
        "anyio.run(main)\n"
    )
    async with locker.hold("u1", 5):
        process = subprocess.Popen([sys.executable, "-c", waiter, str(tmp_path)])
        try:
            await eventually(release_file(tmp_path).exists)
        finally:
            process.kill()
            process.wait()
    assert release_file(tmp_path).read_text()  # the dead waiter's request is still there
    await holder_is_not_asked(locker, count_checks(monkeypatch))
