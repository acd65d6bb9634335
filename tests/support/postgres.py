"""A real, throw-away PostgreSQL server for the tests (pytest plugin, loaded by conftest).

``initdb`` runs in a fresh temporary directory as an unprivileged user when the tests run as
root (CI does; initdb refuses root), and ``pg_ctl start`` serves it on a free port on 127.0.0.1
with its socket in the same directory. It is stopped at the end of the session. Only when no
PostgreSQL server is installed (and ``.ci/run`` could not install one) are the tests that need
it skipped, with the reason printed.

Fixtures: ``postgres_server`` (session) and ``postgres_url`` (a new, empty database per test).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SUPERUSER = "postgres"
PASSWORD = "s3cret-for-tests"


def find_bin_dir() -> Path | None:
    """The directory holding initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/N/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(os.path.realpath(on_path)).parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unprivileged_user() -> str | None:
    """Who runs the server: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root, and neither a 'postgres' nor a 'nobody' user exists")


@dataclass
class PostgresServer:
    bin_dir: Path
    directory: Path
    port: int
    user: str | None
    _databases: itertools.count[int]

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def log(self) -> Path:
        return self.directory / "server.log"

    def url(self, dbname: str = "postgres", *, password: str | None = PASSWORD) -> str:
        auth = f"{SUPERUSER}:{password}" if password is not None else SUPERUSER
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(
            command, capture_output=True, text=True, timeout=120, cwd=self.directory, check=False
        )

    def _check(self, result: subprocess.CompletedProcess[str], what: str) -> None:
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{what} failed: {result.stdout}{result.stderr}\n{log}")

    def init(self) -> None:
        pwfile = self.directory / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            for path in (self.directory, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._check(
            self._run(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ),
            "initdb",
        )

    def start(self) -> None:
        # fsync=off: the tests stop and restart the server, never the machine.
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=200"
        )
        self._check(
            self._run(
                "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-o", options, "start"
            ),
            "pg_ctl start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._check(
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop"), "pg_ctl stop"
        )

    def new_database(self) -> str:
        """A new empty database; returns its URL (with the password)."""
        import psycopg

        name = f"test_{next(self._databases)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


def start_server() -> PostgresServer:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise FileNotFoundError(
            "no PostgreSQL server installed (initdb/pg_ctl not on PATH nor in "
            "/usr/lib/postgresql/*/bin; .ci/run installs it with apt-get install postgresql)"
        )
    # Short and traversable by the server's user: the Unix socket lives here (107-byte limit).
    directory = Path(
        tempfile.mkdtemp(prefix="expect-ct-pg-", dir="/tmp" if os.path.isdir("/tmp") else None)
    )
    server = PostgresServer(
        bin_dir, directory, _free_port(), _unprivileged_user(), itertools.count(1)
    )
    server.init()
    server.start()
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed: pip install -e '.[test]'")
    try:
        server = start_server()
    except FileNotFoundError as e:
        print(f"\nPostgreSQL tests skipped: {e}")
        pytest.skip(str(e))
    try:
        yield server
    finally:
        try:
            server.stop("immediate")
        except RuntimeError:
            pass
        shutil.rmtree(server.directory, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    return postgres_server.new_database()
