"""A throw-away PostgreSQL cluster for tests: initdb + pg_ctl in a temporary folder.

One cluster per test session (``pg_cluster``), a fresh database per test (``pg_url``),
so tests never see each other's rows. The binaries come from PATH or
``/usr/lib/postgresql/<version>/bin``. initdb refuses to run as root, so when the tests
run as root the cluster is made and run by the ``postgres`` user (``runuser``), which
is given the folder. The server listens on 127.0.0.1 on a free port with password
authentication (``scram-sha-256``, a random password per session: ``url()`` carries it,
so the pg_dump tests can check it never leaks and that a wrong one is refused) and on a
unix socket in its folder with trust authentication (``psql`` here, nobody else).

Without the binaries a test that needs the cluster fails when ``CI`` is set (CI must
run every backend) and is skipped otherwise (a laptop without PostgreSQL).

Durability settings are relaxed (``fsync=off``): an immediate stop (``stop(immediate=
True)``, a crash to the clients) still recovers from the WAL, since the OS keeps what
was written; only an OS crash would lose data, and tests do not crash the OS.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["PostgresCluster", "find_pg_bin", "own_pg", "pg_cluster", "pg_url"]

_serial = itertools.count()


def find_pg_bin() -> Path | None:
    """The folder holding initdb and pg_ctl, or None."""
    found = shutil.which("initdb")
    if found is not None and shutil.which("pg_ctl") is not None:
        return Path(os.path.realpath(found)).parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(candidate, "initdb")):
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresCluster:
    """One cluster in ``directory``; ``start``/``stop`` may be called again (outages)."""

    def __init__(self, directory: Path, bin_dir: Path) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.bin_dir = bin_dir
        self.port = _free_port()
        self.user = "postgres"
        self.password = "pg-" + os.urandom(8).hex()
        # As root, run every server binary as the postgres user (initdb refuses root).
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            entry = pwd.getpwnam("postgres")
            directory.mkdir(parents=True, exist_ok=True)
            os.chown(directory, entry.pw_uid, entry.pw_gid)
        else:
            directory.mkdir(parents=True, exist_ok=True)
            self.user = pwd.getpwuid(os.geteuid()).pw_name

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._as, *argv], capture_output=True, text=True, check=check, timeout=120
        )

    def init(self) -> None:
        pwfile = self.directory / "pwfile"
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        if self._as:
            shutil.chown(pwfile, "postgres")
        try:
            self._run(
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                self.user,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            )
        finally:
            pwfile.unlink()
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(
                "\n# test cluster\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.directory}'\n"
                "fsync = off\nfull_page_writes = off\n"
                "max_connections = 200\nshared_buffers = 32MB\n"
            )

    def start(self) -> None:
        result = self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.directory / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
            check=False,
        )
        if result.returncode != 0:
            log = ""
            with contextlib.suppress(OSError):
                log = (self.directory / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"pg_ctl start failed: {result.stderr.strip()}\n{log}")
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not listen on {self.port}") from None
                time.sleep(0.02)

    def stop(self, *, immediate: bool = False) -> None:
        """Stop the server; ``immediate``: at once, no checkpoint (a crash to clients)."""
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-m",
            "immediate" if immediate else "fast",
            "-w",
            "stop",
            check=False,
        )

    def url(self, database: str, *, password: str | None = None) -> str:
        """A TCP URL with the cluster's password (or ``password``, to be refused)."""
        secret = self.password if password is None else password
        return f"postgresql://{self.user}:{secret}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with psql; ``RuntimeError`` with psql's message if it fails."""
        result = self._run(
            str(self.bin_dir / "psql"),
            "-X",
            "-h",
            str(self.directory),  # the unix socket: trust, no password to hand over
            "-p",
            str(self.port),
            "-U",
            self.user,
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-c",
            sql,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql {sql!r} failed: {result.stderr.strip()}")
        return result.stdout

    def new_database(self, prefix: str = "t") -> str:
        """A new, empty database of its own; its name."""
        name = f"{prefix}_{os.getpid()}_{next(_serial)}"
        self.psql(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return name


def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI must run the PostgreSQL tests)")
    pytest.skip(message)


def _cluster() -> Iterator[PostgresCluster]:
    """A started cluster in a temporary folder of its own, removed afterwards.

    Not under pytest's tmp_path: those folders are 0700 root's, and the postgres user
    must reach its data directory.
    """
    bin_dir = find_pg_bin()
    if bin_dir is None:
        _missing("PostgreSQL binaries (initdb, pg_ctl) not found on PATH or /usr/lib/postgresql")
    assert bin_dir is not None
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        _missing("running as root needs runuser to start PostgreSQL as the postgres user")
    folder = Path(tempfile.mkdtemp(prefix="metering-pg-"))
    try:
        os.chmod(folder, 0o755)
        cluster = PostgresCluster(folder / "cluster", bin_dir)
        try:
            cluster.init()
            cluster.start()
        except (RuntimeError, subprocess.SubprocessError, OSError, KeyError) as exc:
            detail = getattr(exc, "stderr", "") or ""
            pytest.fail(f"cannot start a PostgreSQL test cluster: {exc} {detail}".strip())
        try:
            yield cluster
        finally:
            cluster.stop(immediate=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """One running cluster for the session (fails in CI, skips elsewhere, without it)."""
    yield from _cluster()


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster) -> str:
    """The URL of a fresh, empty database for this test."""
    return pg_cluster.url(pg_cluster.new_database())


@pytest.fixture
def own_pg() -> Iterator[PostgresCluster]:
    """A cluster of the test's own, for tests that stop and start the server."""
    yield from _cluster()
