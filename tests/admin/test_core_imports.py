"""The library core runs without the ``admin`` extra: FastAPI and Jinja2 are imported by
the admin app only (the gateway imports it only when admin tokens are configured)."""

from __future__ import annotations

import subprocess
import sys

CORE = [
    "metering_middleware",
    "metering_middleware.runtime",
    "metering_middleware.cli",
    "metering_middleware.admin",
    "metering_middleware.admin.tokens",
    "metering_middleware.admin.context",
    "example_gateway.config",
    "example_gateway.app",
]


def test_the_core_imports_no_fastapi_nor_jinja2() -> None:
    code = (
        f"import importlib, sys\nfor m in {CORE!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in ('fastapi', 'jinja2', 'pydantic') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_check_sees_an_import() -> None:
    code = "import sys, metering_middleware.admin.app\nprint('fastapi' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
