"""The floor plan holds (docs/architecture.md): import-linter's contracts in pyproject.toml.

The same check as ``.ci/run``'s ``lint-imports``, so the suite catches a broken floor
too; and, since a check that finds nothing proves nothing, the contracts are run on a
copy of the source with a forbidden import put in, and must name it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(root / "pyproject.toml")],
        cwd=root,
        # The copy's packages, not the installed ones: a PYTHONPATH entry comes first.
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_contracts_hold() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _copy(tmp_path: Path) -> Path:
    for package in ("metering_middleware", "example_gateway"):
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # The one the hand-written checker this replaced missed: floor 0 importing floor 1.
        ("config.py", "from .outcome import is_chargeable", "metering_middleware.config"),
        ("ledger/records.py", "from ..middleware import MeteringMiddleware", "ledger"),
        ("middleware.py", "from . import cli", "metering_middleware.middleware"),
        ("identity.py", "from .ledger import CallRecord", "Identity reads the request only"),
        ("rating/__init__.py", "from ..signing import sign_v3", "Rating, notices"),
        ("tenant/__init__.py", "from ..admin import app", "The tenant view"),
        ("limiter/__init__.py", "import example_gateway", "never imports the example gateway"),
        ("runtime.py", "import fastapi", "FastAPI and Jinja2"),
        ("tracing.py", "import opentelemetry.trace", "never imports OpenTelemetry"),
        # The stores sit on floor 2; the ledger's backends stay clear of it.
        ("ledger/journal.py", "from ..stores.sqlite import rating", "Each floor imports only"),
        ("stores/sqlite/ledger.py", "from ...rating import months", "The ledger's backends"),
        ("stores/postgresql/ledger.py", "from ...notices import Notice", "The ledger's backends"),
    ],
)
def test_a_forbidden_import_is_found(tmp_path: Path, module: str, line: str, broken: str) -> None:
    root = _copy(tmp_path)
    path = root / "metering_middleware" / module
    path.write_text(path.read_text("utf-8") + f"\n{line}  # noqa\n", "utf-8")
    result = _lint(root)
    assert result.returncode == 1, result.stdout
    report = result.stdout[result.stdout.index("Broken contracts") :]
    assert broken in report
