"""The README's "An account's lifecycle, worked" replays as written.

Every ``$ metering ...`` line runs as a real CLI process on the gateway's ledger and must
print exactly the lines under it; every ``# tenant:`` line makes that many signed calls
through the example gateway (a second apart, on the gateway's injected clock) and must get
those answers; ``# the gateway settles`` runs the gateway's settler past the lag, and
``# a second later`` lets the standing snapshot refresh (as it does after each command:
the tenant's next call comes at least a refresh interval later).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx

from example_gateway.app import create_gateway_app
from example_gateway.config import GatewayConfig
from example_gateway.mock_upstream import create_mock_upstream
from metering_middleware import ManualClock, MeteringConfig, MeteringRuntime
from metering_middleware.catalog import default_catalog
from metering_middleware.ledger import SqliteStore
from metering_middleware.settler import BackgroundSettler
from tests.support.money import v3_at
from tests.support.servers import run_server

README = Path(__file__).resolve().parent.parent / "README.md"
MARKER = "<!-- lifecycle-example: tests/test_readme_lifecycle.py replays this block -->"
BODY = b"ImageURL=https%3A%2F%2Fx%2Fa.jpg"
START = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # 10:00 in Beijing


def lifecycle_block() -> list[str]:
    text = README.read_text("utf-8")
    after = text[text.index(MARKER) + len(MARKER) :]
    match = re.match(r"\s*```console\n(.*?)```", after, re.S)
    assert match, "the marker must precede a console block"
    return match.group(1).splitlines()


def cli(db: Path, command: str) -> str:
    argv = shlex.split(command.split("#")[0].split(">")[0])
    assert argv[0] == "metering"
    env = {**os.environ, "METERING_LEDGER_URL": f"sqlite:///{db}"}
    done = subprocess.run(
        [sys.executable, "-m", "metering_middleware.cli", *argv[1:]],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.decode()


async def test_the_lifecycle_example_replays_as_written(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite"
    lines = lifecycle_block()
    clock = ManualClock(START)
    catalog = default_catalog()
    runtime = MeteringRuntime(
        MeteringConfig(ledger_url=f"sqlite:///{db}", enforce_balance=True),
        clock=clock,
        catalog=catalog,
        store=SqliteStore(db, clock=clock),
    )
    key: tuple[str, str] | None = None
    replayed = 0
    async with run_server(create_mock_upstream()) as upstream:
        app = create_gateway_app(GatewayConfig(upstream=upstream, timeout=10.0), runtime)
        async with run_server(app) as base, httpx.AsyncClient(timeout=10.0) as client:

            async def call() -> str:
                assert key is not None
                clock.advance(1.0)
                headers = v3_at(key[0], key[1], BODY, clock.now())
                answer = await client.post(base, content=BODY, headers=headers)
                if answer.status_code == 200:
                    return "200"
                return str(json.loads(answer.content)["Code"])

            async def refreshed() -> None:
                assert runtime.guard is not None
                view = runtime.guard.view
                await view.join()
                clock.advance(1.0)
                view.start_if_due()
                await view.join()

            i = 0
            while i < len(lines):
                line = lines[i]
                i += 1
                if line.startswith("$ "):
                    expected = []
                    while i < len(lines) and not lines[i].startswith(("$ ", "# ")):
                        expected.append(lines[i])
                        i += 1
                    out = cli(db, line[2:])
                    if "accounts add" in line:
                        [row] = json.loads(out)
                        key = (row["access_key_id"], row["access_key_secret"])
                    else:
                        got = [ln.rstrip() for ln in out.splitlines()]
                        assert got == [ln.rstrip() for ln in expected], line
                    await refreshed()  # the tenant's next call comes a moment later
                    replayed += 1
                elif line.startswith("# tenant:"):
                    want = line.rsplit(":", 1)[1].split()
                    count = int(line.split()[2])
                    assert len(want) == count, line
                    assert [await call() for _ in range(count)] == want, line
                    replayed += 1
                elif line.startswith("# the gateway settles"):
                    clock.advance(61.0)
                    settler = BackgroundSettler(str(db), catalog, clock, interval=3600)
                    assert await settler.settle_now() is not None
                    await refreshed()
                    replayed += 1
                elif line.startswith("# a second later"):
                    await refreshed()
                    replayed += 1
    assert replayed == 9  # every step of the block ran
    # "Each step recorded a notice": overdue, then restored.
    with sqlite3.connect(db) as conn:
        kinds = [k for (k,) in conn.execute("SELECT kind FROM notices ORDER BY seq")]
    assert kinds == ["account.overdue", "account.restored"]
