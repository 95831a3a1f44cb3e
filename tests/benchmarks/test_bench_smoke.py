"""The comparison bench still runs end to end: ``bench/compare.py --smoke``.

It measures nothing here (timings never go into tests): the smoke proves every server
variant starts and answers every signed call with a 200, that every metered server and
the do-it-yourself stack wrote exactly one record per 200 (the bench itself stops with an
error otherwise; the JSON it writes is checked again here), and that the writer and
in-process families ran. With the aiohttp client, so CI needs nothing beyond the test extra.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx

from bench.apps import diy_app
from tests.support.postgres import PostgresCluster

ROOT = Path(__file__).resolve().parents[2]
METERED = {"trivial+batched", "trivial+strict", "diy+slowapi", "gateway+batched", "gateway+strict"}
BARE = {"trivial", "proxy", "proxy-httpx"}


def test_compare_smoke_runs_every_family(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compare.py"), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    data = json.loads(out.read_text())
    servers = data["servers"]
    assert set(servers) == METERED | BARE
    for variant, runs in servers.items():
        assert len(runs) == 1, variant
        (run,) = runs
        assert run["rps"] > 0 and run["cpu_us"] >= 0, variant
        # 20 warm-up calls and 100 timed ones, every one a 200 with its own record.
        assert run["charged"] == (120 if variant in METERED else None), variant
    (inprocess,) = data["inprocess"]
    assert inprocess["charged"] == inprocess["calls"] + 100  # 100 warm-up calls
    (writer,) = data["writer"]
    assert writer["writer_rows_s"] > 0 and writer["plain_rows_s"] > 0
    assert "metered batched / DIY" in done.stdout  # the report printed its comparisons


async def test_diy_stack_commits_one_row_per_call_keyed_by_access_key(tmp_path: Path) -> None:
    """The baseline does what the bench says it does: slowapi keyed by the AccessKey, a
    committed row per call (read back through a second connection)."""
    db = tmp_path / "diy.sqlite"
    app = diy_app(str(db))
    auth = "ACS3-HMAC-SHA256 Credential=LTAIdiy1,SignedHeaders=host,Signature=00"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://diy") as client:
        for _ in range(3):
            answer = await client.post(
                "/", content=b"x=1", headers={"authorization": auth, "x-acs-action": "DetectFace"}
            )
            assert answer.status_code == 200
            assert answer.headers["x-acs-request-id"]
            assert answer.json()["Data"]["FaceCount"] == 1
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT access_key_id, action, status FROM calls").fetchall()
    assert rows == [("LTAIdiy1", "DetectFace", 200)] * 3


def test_pg_ingest_bench_smoke_commits_every_record_on_both_stores(
    tmp_path: Path, pg_cluster: PostgresCluster
) -> None:
    """``bench/pg_ingest_bench.py --smoke``: four writer processes per run, strict and
    batched, on one SQLite file and on one PostgreSQL database; the bench itself stops
    with an error unless the ledger holds every record (checked again here)."""
    out = tmp_path / "ingest.json"
    done = subprocess.run(
        [
            sys.executable, str(ROOT / "bench" / "pg_ingest_bench.py"), "--smoke",
            "--pg-url", pg_cluster.url("postgres"), "--json", str(out),
        ],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["processes"] == 4
    runs = data["runs"]
    assert set(runs) == {
        f"{b}+{m}" for b in ("sqlite", "postgresql") for m in ("strict", "batched")
    }
    for variant, results in runs.items():
        (run,) = results
        assert run["rows"] == 4 * data["records"] and run["records_s"] > 0, variant
    assert "postgresql / sqlite, strict" in done.stdout
    assert pg_cluster.password not in done.stdout + done.stderr
