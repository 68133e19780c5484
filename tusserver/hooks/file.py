"""File hooks: one executable per event in --hooks-dir, run exactly as tusd runs them.

The JSON hook request goes to stdin; TUS_ID, TUS_SIZE and TUS_OFFSET are set in the
environment; the working directory is the hooks directory. Exit 0 means stdout (possibly
empty) is the JSON hook response; any other exit is a failure. A missing script means the
event is not handled (tusd's rule). stderr lines go to the server log. The process runs in its
own session so a timeout kills the script together with anything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

from tusserver.config import SETTINGS_ENV, env_name
from tusserver.hooks.model import HookFailed, HookRequest, HookResponse, parse_response

log = logging.getLogger("tusserver.hooks")

PRIVATE_ENV = frozenset({SETTINGS_ENV, env_name("admin_token")})
MAX_OUTPUT = 1024 * 1024  # a hook response is small; refuse to buffer a runaway stdout


def hook_environment() -> dict[str, str]:
    """The server's environment minus the secrets it holds for itself: the admin token and
    the settings handed to workers (which carry it). Hook scripts need neither."""
    return {name: value for name, value in os.environ.items() if name not in PRIVATE_ENV}


class FileHooks:
    """Runs `<directory>/<event>` for each event."""

    kind = "file"

    def __init__(self, directory: Path | str, timeout: float):
        self.directory = Path(directory).resolve()
        self.timeout = timeout

    def handles(self, event: str) -> bool:
        """A script exists for the event (checked each time, so scripts can be added live)."""
        return (self.directory / event).exists()

    async def invoke(self, request: HookRequest) -> HookResponse:
        path = self.directory / request.type
        if not path.exists():
            return HookResponse()
        upload = request.event.upload
        env = {
            **hook_environment(),
            "TUS_ID": upload.id,
            "TUS_SIZE": str(upload.size),
            "TUS_OFFSET": str(upload.offset),
        }
        try:
            proc = await asyncio.create_subprocess_exec(
                str(path),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=self.directory,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise HookFailed(f"cannot run hook {path}: {exc}") from None
        try:
            stdout, stderr = await asyncio.wait_for(
                _communicate(proc, request.dumps().encode()), self.timeout or None
            )
        except TimeoutError:
            _kill_group(proc)
            raise HookFailed(f"hook {path} timed out after {self.timeout:g}s", "timeout") from None
        except BaseException:
            _kill_group(proc)
            raise
        _log_stderr(request, stderr)
        if proc.returncode != 0:
            raise HookFailed(f"hook {path} exited with code {proc.returncode}")
        return parse_response(stdout)


async def _communicate(proc: asyncio.subprocess.Process, data: bytes) -> tuple[bytes, bytes]:
    """Feed stdin, collect bounded stdout and stderr, wait for the exit."""
    assert proc.stdin and proc.stdout and proc.stderr

    async def feed() -> None:
        assert proc.stdin
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(data)
            await proc.stdin.drain()
        proc.stdin.close()

    async def drain(stream: asyncio.StreamReader) -> bytes:
        out = bytearray()
        while chunk := await stream.read(65536):
            if len(out) < MAX_OUTPUT:
                out += chunk[: MAX_OUTPUT - len(out)]
        return bytes(out)

    _, stdout, stderr = await asyncio.gather(feed(), drain(proc.stdout), drain(proc.stderr))
    await proc.wait()
    return stdout, stderr


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the hook's whole process group (it runs in its own session)."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    # reap in the background so no zombie is left behind
    with contextlib.suppress(RuntimeError):
        task = asyncio.get_running_loop().create_task(proc.wait())
        _reapers.add(task)
        task.add_done_callback(_reapers.discard)


_reapers: set[asyncio.Task[int]] = set()


def _log_stderr(request: HookRequest, stderr: bytes) -> None:
    """A hook's stderr is its log: forward it line by line to the server log."""
    for line in stderr.decode("utf-8", "replace").splitlines():
        if line.strip():
            log.info("hook %s [%s]: %s", request.type, request.event.upload.id, line)
