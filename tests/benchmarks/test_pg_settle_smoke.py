"""The PostgreSQL settlement bench still runs end to end: ``--records 2000``.

It measures nothing here (timings never go into tests): the smoke proves the bench builds
a ledger on PostgreSQL, times the GROUP BY and a full settle of every record, and reports
their ratio.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.postgres import PostgresCluster

ROOT = Path(__file__).resolve().parents[2]


def test_pg_settle_bench_smoke(pg_cluster: PostgresCluster, tmp_path: Path) -> None:
    name = pg_cluster.new_database("bench")
    pg_url = pg_cluster.url(name)
    out = tmp_path / "pg.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "pg_settle_bench.py"),
            "--url",
            pg_url,
            "--records",
            "2000",
            "--accounts",
            "20",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    pg_cluster.psql(f'DROP DATABASE "{name}" WITH (FORCE)')
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert (result["records"], result["settled"]) == (2000, 2000)
    assert result["group_by_s"] > 0 and result["settle_s"] > 0 and result["ratio"] > 0
    assert "## Settlement on PostgreSQL" in done.stdout
