"""A throwaway PostgreSQL server for the test session: Debian's binaries, a temp data dir,
loopback only, fsync off. One server per session; each test gets its own database.

Debian puts the server binaries in /usr/lib/postgresql/<version>/bin (not on PATH). PostgreSQL
refuses to run as root, so when the tests run as root (CI) the cluster belongs to the
`postgres` user and its commands run through `runuser`. `make test` installs the package
(tests/install-services.sh) when it is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

BIN_ROOT = Path("/usr/lib/postgresql")
PSQL_FLAGS = ("-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1")
FAST = ("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")


def binaries() -> Path:
    """The newest installed server version's bin directory."""
    versions = sorted(
        (p for p in BIN_ROOT.glob("*/bin") if (p / "postgres").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not versions:
        raise RuntimeError(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin:"
            " run tests/install-services.sh (make test does) or apt-get install postgresql"
        )
    return versions[-1]


class PostgresServer:
    """initdb + postgres on a free loopback port; `url(db)` for a database on it."""

    def __init__(self, directory: Path, port: int):
        self.directory = directory
        self.port = port
        self.data = directory / "data"
        self.bin = binaries()
        self.proc: subprocess.Popen[bytes] | None = None
        self._as_postgres = os.geteuid() == 0

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if self._as_postgres else list(args)

    def start(self, fast: bool = True) -> None:
        """Create the cluster (first time) and start the server; returns once it answers.

        `fast` turns durability off (fsync, synchronous commit, full page writes): tests never
        need a database that survives a power cut; benchmarks run with the defaults."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._as_postgres:
            shutil.chown(self.directory, "postgres", "postgres")
        if not self.data.exists():
            subprocess.run(
                self._cmd(
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                ),
                check=True,
                capture_output=True,
            )
        log = open(self.directory / "postgres.log", "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            self._cmd(
                str(self.bin / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.directory),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=400",
                *(FAST if fast else ()),
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"postgres exited with {self.proc.returncode}: "
                    + (self.directory / "postgres.log").read_text()[-2000:]
                )
            ready = subprocess.run(
                [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError("postgres did not become ready")

    def stop(self) -> None:
        """Fast shutdown (SIGINT: abort transactions, close connections)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL through psql (for setup and inspection); returns its output."""
        out = subprocess.run(  # psql from the same version as the server
            [str(self.bin / "psql"), *PSQL_FLAGS, "-d", self.url(database), "-c", sql],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
