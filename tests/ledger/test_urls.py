"""open_store(url): which store a ledger URL names."""

from __future__ import annotations

from pathlib import Path

import pytest

from metering_middleware.ledger import MemoryStore, SqliteStore, open_store


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///ledger.db", "ledger.db"),
        ("sqlite:///data/ledger.db", "data/ledger.db"),
        ("sqlite:////var/lib/ledger.db", "/var/lib/ledger.db"),
        ("sqlite:///my%20ledger.db", "my ledger.db"),
        ("ledger.db", "ledger.db"),
        ("/var/lib/ledger.db", "/var/lib/ledger.db"),
    ],
)
def test_sqlite_urls_and_plain_paths(url: str, path: str) -> None:
    store = open_store(url)

    assert isinstance(store, SqliteStore)
    assert store.path == Path(path)


def test_memory_url() -> None:
    assert isinstance(open_store("memory://"), MemoryStore)


async def test_sqlite_url_options_reach_the_store(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/l.db?synchronous=normal&busy_timeout_ms=250")
    assert isinstance(store, SqliteStore)
    await store.open()
    try:
        assert repr(store).endswith("synchronous='NORMAL')")
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://user@host", "without a database"),
        ("postgres+psycopg://host/db", "no driver suffix"),
        ("redis://localhost", "'redis'"),
        ("sqlite://host/ledger.db", "no host"),
        ("sqlite:///", "without a file path"),
        ("sqlite:///l.db?mode=ro", "unknown sqlite URL options: mode"),
        ("sqlite:///l.db?synchronous=OFF", "synchronous"),
        ("sqlite:///l.db?busy_timeout_ms=soon", "integer"),
        ("memory://somewhere", "no path"),
        ("", "empty"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(url)


def test_a_ledger_url_is_shown_without_its_password() -> None:
    from metering_middleware.ledger.urls import redact_url

    assert redact_url("postgresql://meter:s3cret@db:5432/ledger") == (
        "postgresql://meter:***@db:5432/ledger"
    )
    shown = redact_url("postgresql://db/ledger?password=s3cret&pool_max=8")
    assert "s3cret" not in shown and "pool_max=8" in shown
    assert redact_url("sqlite:////var/lib/ledger.sqlite") == "sqlite:////var/lib/ledger.sqlite"
