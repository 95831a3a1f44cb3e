"""The README's "Mount it in your own gateway" example runs as written."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import add_account
from tests.e2e.signed import v3_headers
from tests.support.servers import run_server

README = Path(__file__).resolve().parent.parent / "README.md"
MARKER = "<!-- mount-example: tests/test_readme_mount.py runs this block -->"


def mount_example() -> str:
    text = README.read_text("utf-8")
    after = text[text.index(MARKER) + len(MARKER) :]
    match = re.match(r"\s*```python\n(.*?)```", after, re.S)
    assert match, "the marker must precede a python block"
    return match.group(1)


async def test_the_mount_example_meters_everything_but_its_own_routes(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite"
    source = mount_example().replace("/var/lib/gateway/ledger.sqlite", str(db))
    url = f"sqlite:///{db}"
    key, secret = await add_account(url, "acme")
    namespace: dict[str, Any] = {}
    exec(compile(source, "README.md", "exec"), namespace)
    async with (
        run_server(namespace["app"], lifespan="on") as base,
        httpx.AsyncClient(base_url=base) as client,
    ):
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        # Under the health route's prefix, unsigned: refused by the meter, not served.
        params = {"Action": "DetectFace", "Format": "JSON"}
        sneaky = await client.get("/healthz/x", params=params)
        assert sneaky.status_code == 400 and "Code" in sneaky.json()
        body = b"ImageURL=https%3A%2F%2Fx%2Fa.jpg"
        answer = await client.post("/", content=body, headers=v3_headers(key, secret, body))
        assert answer.status_code == 200 and answer.json()["Action"] == "DetectFace"
        record_id = answer.json()["RequestId"]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT id, action FROM calls").fetchall() == [
            (record_id, "DetectFace")
        ]
