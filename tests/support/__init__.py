"""Helpers shared by test packages: ``from tests.support.servers import run_server``."""
