"""Helpers shared by test packages (pytest puts ``tests/`` on ``sys.path``: import ``support``)."""
