"""The rating tests' backends: one test body over the SQLite and the PostgreSQL ledger."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

#: ``ledger(name)``: where a test's ledger named ``name`` lives, on the test's backend: a
#: file in tmp_path (SQLite) or a fresh database of the session's cluster (PostgreSQL).
LedgerAt = Callable[[str], "Path | str"]


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> LedgerAt:
    if request.param == "sqlite":
        return lambda name: tmp_path / name
    cluster = request.getfixturevalue("pg_cluster")
    made: dict[str, str] = {}

    def url(name: str) -> str:
        if name not in made:
            made[name] = cluster.url(cluster.new_database())
        return str(made[name])

    return url
