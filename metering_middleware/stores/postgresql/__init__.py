"""PostgreSQL stores (asyncpg): the ledger now; rating, money and notices later.

Needs the ``postgresql`` extra (``pip install 'metering_middleware[postgresql]'``).
See docs/postgresql.md for URLs, options, migrations and what runs on PostgreSQL yet.
"""

from ._url import PostgresOptions, parse_url
from .ledger import PostgresStore

__all__ = ["PostgresOptions", "PostgresStore", "parse_url"]
