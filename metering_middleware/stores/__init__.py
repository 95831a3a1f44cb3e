"""Storage backends, one package per database (PostgreSQL in :mod:`.postgresql`)."""
