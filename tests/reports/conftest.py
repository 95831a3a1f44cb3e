"""The report tests' backends: one test body over the SQLite and the PostgreSQL ledger.

``ledger`` is the rating tests' fixture (a file in tmp_path, or a fresh database dropped
after the test). ``module_ledger`` is the same per test module: the reports only read
(``test_preview`` checks that a report writes nothing), so the tests of one module that
share one example ledger build it once per backend instead of once per test, which is
most of what the PostgreSQL variants would cost (a database, its migrations, the calls
and a settlement).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rating.conftest import LedgerAt, ledger, pg_databases
from tests.support.postgres import PostgresCluster

__all__ = ["LedgerAt", "ledger", "module_ledger", "pg_databases"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_ledger(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LedgerAt]:
    if request.param == "sqlite":
        folder = tmp_path_factory.mktemp("reports")
        yield lambda name: folder / name
        return
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    made: dict[str, str] = {}

    def url(name: str) -> Path | str:
        if name not in made:
            made[name] = cluster.new_database()
        return cluster.url(made[name])

    yield url
    for database in made.values():
        cluster.psql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
