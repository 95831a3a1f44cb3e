"""Storage backends, one package per database: :mod:`.sqlite` and :mod:`.postgresql`."""
