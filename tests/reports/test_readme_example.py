"""The README's report example is what the command prints on its ledger."""

from __future__ import annotations

import asyncio
import re
import shlex
from pathlib import Path

import pytest

from metering_middleware.cli import main
from tests.reports.conftest import LedgerAt
from tests.reports.readme_ledger import build
from tests.reports.support import cli_url

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"<!-- reports-example[^>]*-->\n```console\n\$ (.*?)\n(.*?)```", re.S)


async def test_the_readme_example(ledger: LedgerAt, capsys: pytest.CaptureFixture[str]) -> None:
    found = BLOCK.search(README.read_text("utf-8"))
    assert found, "the README's reports example is gone"
    command, shown = found.group(1), found.group(2)
    argv = shlex.split(command)
    assert argv[0] == "metering"
    path = ledger("ledger")
    await build(path)
    code = await asyncio.to_thread(main, ["--db", cli_url(path), *argv[1:]])
    out, _ = capsys.readouterr()
    assert code == 0 and out == shown
