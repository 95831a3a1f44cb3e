"""Fixtures every test folder may use: the PostgreSQL test cluster (tests/support/postgres.py)."""

from tests.support.postgres import own_pg, pg_cluster, pg_url  # noqa: F401 - fixtures
