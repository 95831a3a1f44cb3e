"""``postgresql://`` ledger URLs: our options out, the rest left to asyncpg (private)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ...ledger.urls import redact_url as redact

__all__ = ["PostgresOptions", "parse_url", "redact"]

#: Options this package reads (and removes before asyncpg sees the URL).
_OURS = ("pool_min", "pool_max", "connect_timeout", "command_timeout")
#: Options asyncpg reads from a URL's query; anything else it would send to the server as
#: a run-time setting, where a typo is an error only at connect time: refused here instead.
_ASYNCPG = frozenset(
    (
        "host",
        "port",
        "user",
        "password",
        "passfile",
        "dbname",
        "database",
        "sslmode",
        "sslcert",
        "sslkey",
        "sslrootcert",
        "sslcrl",
        "sslpassword",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "target_session_attrs",
        "krbsrvname",
        "gsslib",
        "service",
        "servicefile",
        "application_name",
        "options",
    )
)


@dataclass(frozen=True, slots=True)
class PostgresOptions:
    dsn: str  # what asyncpg connects with
    where: str  # the URL without its password, for messages
    pool_min: int = 1
    pool_max: int = 4
    connect_timeout: float = 5.0
    command_timeout: float = 10.0


def parse_url(url: str) -> PostgresOptions:
    """Check a ``postgresql://`` / ``postgres://`` URL; ``ValueError`` saying what is wrong."""
    where = redact(url)
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("postgresql", "postgres"):
        raise ValueError(f"not a postgresql:// URL: {where!r}")
    if parts.fragment:
        raise ValueError(f"postgresql URLs take no #fragment: {where!r}")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError:
        raise ValueError(f"postgresql URL with a bad port: {where!r}") from None
    query = parse_qsl(parts.query, keep_blank_values=True)
    database = parts.path.lstrip("/") or dict(query).get("dbname") or dict(query).get("database")
    if not database:
        raise ValueError(f"postgresql URL without a database (postgresql://host/DB): {where!r}")
    if not parts.hostname and "host" not in dict(query):
        raise ValueError(f"postgresql URL without a host (postgresql://HOST/db): {where!r}")
    ours: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for key, value in query:
        if key in _OURS:
            ours[key] = value
        elif key in _ASYNCPG:
            rest.append((key, value))
        else:
            known = ", ".join((*_OURS, "sslmode", "application_name", "..."))
            raise ValueError(f"unknown postgresql URL option {key!r} (known: {known})")
    pool_min = _integer(ours, "pool_min", 1, low=0)
    pool_max = _integer(ours, "pool_max", 4, low=1)
    if pool_min > pool_max:
        raise ValueError(f"pool_min ({pool_min}) must not exceed pool_max ({pool_max})")
    dsn = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest, safe="/"), ""))
    return PostgresOptions(
        dsn=dsn,
        where=where,
        pool_min=pool_min,
        pool_max=pool_max,
        connect_timeout=_seconds(ours, "connect_timeout", 5.0),
        command_timeout=_seconds(ours, "command_timeout", 10.0),
    )


def _integer(options: dict[str, str], key: str, default: int, *, low: int) -> int:
    if key not in options:
        return default
    try:
        value = int(options[key])
    except ValueError:
        raise ValueError(f"{key} must be an integer, not {options[key]!r}") from None
    if value < low:
        raise ValueError(f"{key} must be at least {low}, not {value}")
    return value


def _seconds(options: dict[str, str], key: str, default: float) -> float:
    if key not in options:
        return default
    try:
        value = float(options[key])
    except ValueError:
        raise ValueError(f"{key} must be a number of seconds, not {options[key]!r}") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{key} must be a positive number of seconds, not {options[key]!r}")
    return value
