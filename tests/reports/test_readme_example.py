"""The README's report example is what the command prints on its ledger."""

from __future__ import annotations

import asyncio
import re
import shlex
from pathlib import Path

import pytest

from metering_middleware.cli import main
from tests.reports.readme_ledger import build

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"<!-- reports-example[^>]*-->\n```console\n\$ (.*?)\n(.*?)```", re.S)


async def test_the_readme_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    found = BLOCK.search(README.read_text("utf-8"))
    assert found, "the README's reports example is gone"
    command, shown = found.group(1), found.group(2)
    argv = shlex.split(command)
    assert argv[0] == "metering"
    path = tmp_path / "ledger.sqlite"
    await build(path)
    code = await asyncio.to_thread(main, ["--db", f"sqlite:///{path}", *argv[1:]])
    out, _ = capsys.readouterr()
    assert code == 0 and out == shown
