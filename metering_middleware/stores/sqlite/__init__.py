"""SQLite stores: the ledger (with credentials and durable nonces) and rating, one file.

- :mod:`.ledger`: :class:`~.ledger.SqliteStore`, the ``LedgerStore`` protocol
  (``ledger/store.py``), credentials and nonces included (public as
  ``metering_middleware.ledger.SqliteStore``);
- :mod:`.rating`: :class:`~.rating.SqliteRatingStore`, the ``RatingStore`` protocol
  (``rating/store.py``) in the same file (public as ``metering_middleware.rating``'s);
- :mod:`._rating_ops` and :mod:`._money`: the SQL of settlement and of balances.

Nothing is imported here on purpose: the ledger half is on the request path and must
load without rating (the ``ledger`` package imports it while ``rating`` imports the ledger).
"""

__all__: list[str] = []
