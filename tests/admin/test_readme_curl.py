"""The README's admin ``curl`` lines run as written against a real gateway."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path

from .conftest import TOKEN, Served

README = Path(__file__).resolve().parents[2] / "README.md"


def _curl_lines() -> list[str]:
    text = README.read_text("utf-8")
    section = text.split("### The admin API", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    joined = block.replace("\\\n", " ")
    return [ln.split("  #")[0].strip() for ln in joined.splitlines() if ln.strip()]


async def test_the_readme_curl_examples_work(tmp_path: Path, served: Served) -> None:
    assert shutil.which("curl"), "curl is needed (the CI image has it)"
    tokens = tmp_path / "admin-tokens"
    tokens.write_text(TOKEN + "\n")
    lines = _curl_lines()
    assert lines[0].startswith("export ADMIN=") and len(lines) == 6
    script = "\n".join(
        ln.replace("/run/secrets/admin-tokens", str(tokens)).replace(
            "http://127.0.0.1:8080/admin", served.url + "/ops/admin"
        )
        + ("" if i == 0 else "; echo")
        for i, ln in enumerate(lines)
    )
    proc = await asyncio.create_subprocess_exec(
        "bash", "-euc", script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    docs = [json.loads(ln) for ln in out.decode().splitlines() if ln.strip()]
    assert len(docs) == 5
    accounts, key, topup, bill, openapi = docs
    assert accounts["items"] == [] or all("acme" in a["account"] for a in accounts["items"])
    assert re.fullmatch(r"LTAI\w{20}", key["access_key_id"]) and len(key["secret"]) == 30
    assert topup["posted"] is True and topup["balance"]["balance"] == "100.00"
    assert bill["account"] == "acme" and bill["month"] == "2026-03"
    assert openapi["openapi"].startswith("3.")
