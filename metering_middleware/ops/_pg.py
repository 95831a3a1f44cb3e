"""``pg_dump`` and ``pg_restore`` for a PostgreSQL ledger (private to ``ops``).

The URL's parts go to libpq through its environment variables (``PGHOST``,
``PGPORT``, ``PGUSER``, ``PGDATABASE``, ``PGSSLMODE``, ...) and the password
through a temporary ``PGPASSFILE`` (mode 0600, removed afterwards): nothing of the
URL is an argument, so ``ps`` shows none of it, and the password is not in the
child's environment either. ``--no-password`` makes a missing or wrong password a
failure instead of a prompt.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from ..ledger.store import StoreError

__all__ = ["check_archive", "dump", "is_archive", "libpq_env"]

#: URL query parameters libpq also reads from the environment.
_QUERY_ENV = {
    "host": "PGHOST",
    "port": "PGPORT",
    "user": "PGUSER",
    "dbname": "PGDATABASE",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME",
    "options": "PGOPTIONS",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
}
#: The custom format's first bytes.
_MAGIC = b"PGDMP"


class PgToolError(StoreError):
    """pg_dump or pg_restore failed or is missing (the message says which)."""


def libpq_env(url: str) -> tuple[dict[str, str], str | None]:
    """The ``PG*`` variables for ``url``, and its password (None: none in the URL)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad PostgreSQL URL: {exc}") from None
    env: dict[str, str] = {}
    hostport = parts.netloc.rpartition("@")[2]
    host = hostport if port is None else hostport[: hostport.rfind(":")]
    if host:
        # Not ``parts.hostname``: it lowercases, and a socket directory may be the host,
        # percent-encoded (postgresql://%2Fvar%2Frun%2Fpostgresql/ledger).
        env["PGHOST"] = unquote(host.strip("[]"))
    if port is not None:
        env["PGPORT"] = str(port)
    if parts.username:
        env["PGUSER"] = unquote(parts.username)
    dbname = unquote(parts.path.lstrip("/"))
    if dbname:
        env["PGDATABASE"] = dbname
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        name = _QUERY_ENV.get(key)
        if name is None:
            raise ValueError(f"PostgreSQL URL option {key!r} is not supported for backups")
        env[name] = value
    password = unquote(parts.password) if parts.password is not None else None
    return env, password


def dump(url: str, out: Path) -> None:
    """``pg_dump --format=custom`` of the database ``url`` names, into ``out``."""
    with _connection_env(url) as env:
        _run(["pg_dump", "--format=custom", "--no-password", f"--file={out}"], env)


def check_archive(path: Path) -> tuple[str, ...]:
    """``pg_restore --list``: the archive's table of contents is readable; the tables
    whose data it holds (``schema.table``), in name order."""
    listing = _run(["pg_restore", "--list", str(path)], {})
    tables = set()
    for line in listing.splitlines():
        # "3340; 0 16385 TABLE DATA public calls owner"
        _, sep, rest = line.partition(" TABLE DATA ")
        if sep and not line.startswith(";"):
            words = rest.split()
            if len(words) >= 2:
                tables.add(f"{words[0]}.{words[1]}")
    return tuple(sorted(tables))


def is_archive(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(len(_MAGIC)) == _MAGIC


@contextmanager
def _connection_env(url: str) -> Iterator[dict[str, str]]:
    env, password = libpq_env(url)
    if password is None:
        yield env
        return
    fd, name = tempfile.mkstemp(prefix="metering-pgpass-")  # 0600, as libpq requires
    try:
        escaped = password.replace("\\", "\\\\").replace(":", "\\:")
        os.write(fd, f"*:*:*:*:{escaped}\n".encode())
        os.close(fd)
        yield {**env, "PGPASSFILE": name}
    finally:
        os.unlink(name)


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:  # Debian keeps the versioned binaries off PATH
        candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
        found = candidates[-1] if candidates else None
    if found is None:
        raise PgToolError(f"{name} not found: install the PostgreSQL client tools")
    return found


def _run(argv: list[str], env: dict[str, str]) -> str:
    # The child gets this process's environment minus any PG* of its own (the URL
    # decides), plus the URL's.
    base = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    try:
        done = subprocess.run(
            [_tool(argv[0]), *argv[1:]],
            env={**base, **env},
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        raise PgToolError(f"cannot run {argv[0]}: {exc}") from None
    if done.returncode != 0:
        # The first error line names the cause (libpq adds hints after it).
        lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ": error: " in ln] or lines
        reason = errors[0].split(": error: ", 1)[-1] if errors else f"exit {done.returncode}"
        raise PgToolError(f"{argv[0]} failed: {reason}")
    return done.stdout
