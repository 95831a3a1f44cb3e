"""The README's demo prints a correct summary of what was charged, and the bills."""

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
    # 200s and NotFoundFace only; free, throttled and refused calls are not charged.
    assert "18 chargeable calls recorded" in text
    with sqlite3.connect(db) as conn:
        rows = dict(conn.execute("SELECT account || ' ' || item, COUNT(*) FROM calls GROUP BY 1"))
        outcomes = dict(
            conn.execute(
                "SELECT outcome || ' ' || detail, SUM(count) FROM outcome_counts "
                "WHERE outcome != 'charged' GROUP BY 1"
            )
        )
    assert rows == {
        "acme facebody.DetectFace": 8,
        "globex facebody.DetectFace": 3,
        "globex ocr.RecognizeLicensePlate": 4,
        "initech facebody.DetectFace": 2,
        "initech ocr.RecognizeLicensePlate": 1,
    }
    assert outcomes == {
        "refused bad_signature": 2,
        "refused throttled": 2,
        "free InvalidParameter": 2,
        "free InternalError": 1,
    }
    bills = text.split("Bill 20")[1:]
    assert [b.split(" for ")[1].split(" ")[0] for b in bills] == ["acme", "globex", "initech"]
    acme, globex, initech = bills
    # acme's DetectFace calls are covered by its QPS subscription.
    assert "amount due (CNY)      0.00" in acme
    # globex's plan paid: 3 x 0.16 + 4 x 15 points out of 5,000.
    assert "4939.52" in globex and "amount due (CNY)      0.00" in globex
    # initech pays as it goes: 2 x 0.0016 + 1 x 0.15 = 0.1532, charged 0.15.
    assert "0.1532" in initech and "amount due (CNY)      0.15" in initech
    # Top-ups minus plans minus settled usage (the month is open: its exact amounts).
    balances = text.split("== Balances")[1]
    assert "acme     200.00" in balances  # 500.00 - its subscription (300)
    assert "globex   50.00" in balances  # 100.00 - its plan (50)
    assert "initech  19.8468" in balances  # 20.00 - 0.1532
