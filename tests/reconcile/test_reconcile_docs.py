"""docs/reconcile.md lists exactly what the parser accepts, and every reason."""

from __future__ import annotations

from pathlib import Path

from metering_middleware.reconcile import COLUMNS, Reason

DOC = (Path(__file__).resolve().parents[2] / "docs" / "reconcile.md").read_text("utf-8")


def test_every_accepted_header_is_documented_in_its_row() -> None:
    rows = {line.split("|")[1].strip(): line for line in DOC.splitlines() if line.startswith("| ")}
    names = {"item_code": "item code"}
    for column, aliases in COLUMNS.items():
        row = rows[names.get(column, column)]
        documented = [a.strip(" `") for a in row.split("|")[3].split(",")]
        assert documented == list(aliases), column


def test_every_reason_is_documented() -> None:
    for reason in Reason:
        if reason is not Reason.MATCH:
            assert f"| `{reason.value}` |" in DOC
