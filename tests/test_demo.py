"""The README's demo prints a correct summary of what was charged."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

from example_gateway.demo import run_demo


async def test_demo_charges_exactly_the_chargeable_calls(tmp_path: Path) -> None:
    out = io.StringIO()
    db = tmp_path / "demo.sqlite"
    assert await run_demo(db, out) == 0
    text = out.getvalue()
    # 6 + 2 (NotFoundFace) for acme, 3 + 4 for globex; free and refused calls are not charged.
    assert "15 chargeable calls recorded" in text
    with sqlite3.connect(db) as conn:
        rows = dict(conn.execute("SELECT account || ' ' || item, COUNT(*) FROM calls GROUP BY 1"))
        refused = conn.execute(
            "SELECT SUM(count) FROM outcome_counts WHERE outcome = 'refused'"
        ).fetchone()[0]
        free = conn.execute(
            "SELECT SUM(count) FROM outcome_counts WHERE outcome = 'free'"
        ).fetchone()[0]
    assert rows == {
        "acme facebody.DetectFace": 8,
        "globex facebody.DetectFace": 3,
        "globex ocr.RecognizeLicensePlate": 4,
    }
    assert (refused, free) == (2, 3)
