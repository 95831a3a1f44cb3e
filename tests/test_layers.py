"""The floor plan holds: nothing imports upward (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "metering_middleware"

# module (or package) -> modules it must never import, directly.
FORBIDDEN = {
    "ledger": {"rating", "middleware", "runtime", "limiter", "identity", "cli", "entitlements"},
    "rating": {"middleware", "runtime", "limiter", "identity", "signing", "entitlements"},
    "limiter": {"middleware", "runtime", "rating", "ledger", "entitlements", "cli"},
    "catalog": {"ledger", "rating", "middleware", "runtime", "limiter", "identity"},
    "signing": {"middleware", "runtime", "identity", "ledger", "rating"},
    "outcome": {"middleware", "runtime", "ledger", "rating"},
    "identity": {"middleware", "runtime", "ledger", "rating", "limiter"},
    "middleware": {"cli", "rating"},
    "durable_nonces": {"middleware", "runtime", "cli", "rating"},
    "notices": {"middleware", "runtime", "limiter", "identity", "entitlements", "cli"},
    # The operator's side manages the ledger; it never runs a metered call's steps.
    "admin": {"middleware", "limiter", "identity", "signing", "cli", "settler"},
    # The query layer under every billing view reads; the request path never needs it.
    "reports": {"middleware", "runtime", "limiter", "identity", "signing", "entitlements", "cli"},
    # Reads the ledger and rating results; never the request path nor the CLI's module.
    "reconcile": {"middleware", "runtime", "limiter", "identity", "signing", "entitlements", "cli"},
    # The tenant view reuses the meter's parts (runtime, verifier), never the meter itself,
    # nor the admin or web faces (FastAPI, Jinja2 stay out of the library core).
    "tenant": {"middleware", "cli", "admin", "web"},
    # Operations on a ledger (migrate, backup, retention): below the runtime and the CLI.
    "ops": {"middleware", "runtime", "limiter", "identity", "signing", "entitlements", "cli"},
}


def _imports(path: Path) -> set[str]:
    """First-level metering_middleware modules that ``path`` imports."""
    tree = ast.parse(path.read_text("utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.startswith("metering_middleware"):
                parts = node.module.split(".")[1:]
            elif node.level > 0:
                here = list(path.relative_to(PACKAGE).parts[:-1])
                up = node.level - 1
                base = here[: len(here) - up] if up else here
                parts = [*base, *(node.module.split(".") if node.module else [])]
                if not node.module:
                    parts += [alias.name for alias in node.names]
            else:
                continue
            if parts:
                found.add(parts[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("example_gateway"):
                    found.add("example_gateway")
    return found


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_upward_imports(path: Path) -> None:
    top = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    imported = _imports(path)
    assert "example_gateway" not in imported, "the library never imports the example gateway"
    bad = imported & FORBIDDEN.get(top, set())
    assert not bad, f"{top} imports {sorted(bad)}"


def test_the_checker_sees_imports() -> None:
    # A check that finds nothing proves nothing: the middleware does import the ledger.
    assert "ledger" in _imports(PACKAGE / "middleware.py")
    assert "clock" in _imports(PACKAGE / "ledger" / "writer.py")
