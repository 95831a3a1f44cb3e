"""PostgreSQL stores (asyncpg): the ledger (:class:`PostgresStore`) and, beside it, rating
and money (``.rating.PostgresRatingStore``, imported from there: it needs the rating
package, which the ledger's users need not load); notices later.

Needs the ``postgresql`` extra (``pip install 'metering_middleware[postgresql]'``).
See docs/postgresql.md for URLs, options, migrations and what runs on PostgreSQL yet.
"""

from ._url import PostgresOptions, parse_url
from .ledger import PostgresStore

__all__ = ["PostgresOptions", "PostgresStore", "parse_url"]
