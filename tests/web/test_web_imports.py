"""The page's libraries stay on the operator's side: the library core imports no Jinja2
nor Playwright, and the page's templates ship inside the package."""

from __future__ import annotations

import subprocess
import sys
from importlib.resources import files


def test_core_imports_neither_jinja_nor_playwright() -> None:
    code = (
        "import sys, metering_middleware, metering_middleware.middleware, "
        "metering_middleware.runtime; "
        "print(sorted(m for m in ('jinja2', 'playwright') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_templates_are_package_data() -> None:
    folder = files("metering_middleware.admin.web").joinpath("templates")
    names = {p.name for p in folder.iterdir()}
    assert {"base.html", "account.html", "accounts.html", "signin.html", "style.css"} <= names
