"""The rating tests' backends: one test body over the SQLite and the PostgreSQL ledger."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.postgres import PostgresCluster

#: ``ledger(name)``: where a test's ledger named ``name`` lives, on the test's backend: a
#: file in tmp_path (SQLite) or a fresh database of the session's cluster (PostgreSQL).
LedgerAt = Callable[[str], "Path | str"]


@pytest.fixture
def pg_databases(request: pytest.FixtureRequest) -> Iterator[Callable[[], str]]:
    """Makes fresh databases (URLs) on the session's cluster, dropped after the test: the
    cluster's folder stays small (removing hundreds of databases at the session's end
    took longer than dropping each)."""
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    made: list[str] = []

    def make() -> str:
        made.append(cluster.new_database())
        return cluster.url(made[-1])

    yield make
    for name in made:
        cluster.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_ledger(pg_databases: Callable[[], str]) -> str:
    """The URL of a fresh database for this test (dropped after it)."""
    return pg_databases()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> LedgerAt:
    if request.param == "sqlite":
        return lambda name: tmp_path / name
    databases: Callable[[], str] = request.getfixturevalue("pg_databases")
    made: dict[str, str] = {}

    def url(name: str) -> str:
        if name not in made:
            made[name] = databases()
        return made[name]

    return url
