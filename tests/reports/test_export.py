"""``metering ledger calls --format json|csv`` streams: keyset pages written as they come,
the same bytes as the listing printed before, memory that does not grow with the ledger,
and a progress bar on stderr only."""

from __future__ import annotations

import asyncio
import io
import json
import tracemalloc
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from metering_middleware._output import render
from metering_middleware.cli import COLUMNS, _ledger_calls, main
from metering_middleware.clock import BEIJING
from metering_middleware.ledger import CallRecord, SqliteStore
from metering_middleware.reports.export import stream_export
from tests.reports.support import COMPARE, Ledger, utc

START = utc(2026, 11, 1)


def _old_rows(records: list[CallRecord]) -> list[dict[str, Any]]:
    # The listing's rows exactly as `metering ledger calls` built them before streaming.
    return [
        {
            "id": r.id,
            "occurred_at": r.occurred_at.astimezone(BEIJING),
            "account": r.account,
            "access_key_id": r.access_key_id,
            "category": r.category,
            "action": r.action,
            "item": r.item,
            "status": r.status,
            "error_code": r.error_code,
            "request_id": r.request_id,
            "latency_ms": r.latency_ms,
        }
        for r in records
    ]


@pytest.fixture
async def small(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.sqlite"
    async with Ledger(path, START) as led:
        await led.account("acme")
        await led.account("acme2")
        same = START + timedelta(minutes=5)
        # Ties on occurred_at across a page boundary (page=2 below), a late record, odd text.
        await led.calls("acme", [same, same, same, START + timedelta(minutes=9)])
        await led.calls("acme2", [START + timedelta(minutes=7)], COMPARE)
        await led.calls("acme", [START + timedelta(minutes=1)])
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("fmt", ["json", "csv"])
@pytest.mark.parametrize("filters", [[], ["--account", "acme"], ["--limit", "3"]])
async def test_the_bytes_are_the_listing_s(
    small: Path, fmt: str, filters: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    async with SqliteStore(small, create=False) as store:
        account = "acme" if "--account" in filters else None
        limit = 3 if "--limit" in filters else None
        records = await store.calls(account=account, limit=limit)
    expected = io.StringIO()
    render(_old_rows(records), COLUMNS[_ledger_calls], fmt, expected)
    code, out, err = await asyncio.to_thread(
        run, capsys, "--db", f"sqlite:///{small}", "ledger", "calls", "--format", fmt, *filters
    )
    assert (code, err) == (0, "")
    assert out == expected.getvalue()
    assert len(records) == (3 if limit else 5 if account else 6)


async def test_pages_keep_the_order_across_ties(small: Path) -> None:
    async with SqliteStore(small, create=False) as store:
        whole = await store.calls()
        for page in (1, 2, 4):
            pages = [p async for p in store.iter_calls(page=page)]
            assert [r for p in pages for r in p] == whole
            assert all(len(p) <= page for p in pages)
        limited = [r async for p in store.iter_calls(page=2, limit=3) for r in p]
        assert limited == whole[:3]
        assert await store.count_calls(account="acme2") == 1


async def test_an_empty_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ledger.sqlite"
    async with Ledger(path, START) as led:
        await led.account("acme")
    code, out, _ = await asyncio.to_thread(
        run, capsys, "--db", f"sqlite:///{path}", "ledger", "calls", "--format", "json"
    )
    assert (code, out) == (0, "[]\n") and json.loads(out) == []


async def test_progress_goes_to_stderr_only(
    small: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{small}"
    _, plain, _ = await asyncio.to_thread(
        run, capsys, "--db", db, "ledger", "calls", "--format", "csv"
    )
    code, out, err = await asyncio.to_thread(
        run, capsys, "--db", db, "ledger", "calls", "--format", "csv", "--progress"
    )
    assert code == 0 and out == plain  # nothing of the bar on stdout
    assert "0/6" in err and " rows" in err


class _Sink(io.TextIOBase):
    """Counts what is written, keeps none of it (stdout of a real export)."""

    def __init__(self) -> None:
        self.chars = 0
        self.lines = 0

    def write(self, text: str) -> int:
        self.chars += len(text)
        self.lines += text.count("\n")
        return len(text)


async def _ledger_of(path: Path, n: int) -> None:
    async with Ledger(path, START) as led:
        await led.account("acme")
        for i in range(0, n, 10_000):
            await led.calls(
                "acme", [START + timedelta(seconds=s) for s in range(i, min(n, i + 10_000))]
            )


async def _peak_export(path: Path, fmt: str) -> tuple[int, int]:
    sink = _Sink()
    async with SqliteStore(path, create=False) as store:

        async def pages() -> Any:
            async for page in store.iter_calls():
                yield _old_rows(page)

        tracemalloc.start()
        try:
            await stream_export(pages(), COLUMNS[_ledger_calls], fmt, sink)  # type: ignore[arg-type]
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    return peak, sink.lines


N = 5_000


@pytest.fixture(scope="module")
def ledgers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    # Built once for both formats: N and 4N records through the ledger store.
    base = tmp_path_factory.mktemp("export")
    small, big = base / "small.sqlite", base / "big.sqlite"
    asyncio.run(_ledger_of(small, N))
    asyncio.run(_ledger_of(big, 4 * N))
    return small, big


@pytest.mark.parametrize("fmt", ["csv", "json"])
async def test_memory_does_not_grow_with_the_ledger(ledgers: tuple[Path, Path], fmt: str) -> None:
    peak_n, lines_n = await _peak_export(ledgers[0], fmt)
    peak_4n, lines_4n = await _peak_export(ledgers[1], fmt)
    per_line = 1 if fmt == "csv" else 13  # a JSON record is 13 lines with indent=2
    assert lines_4n - lines_n == 3 * N * per_line  # every record was written
    # Four times the records, about the same peak: pages, not the ledger, are in memory.
    assert peak_4n < peak_n * 1.5, (peak_n, peak_4n)
    print(f"{fmt}: peak {peak_n / 1e6:.2f} MB for {N}, {peak_4n / 1e6:.2f} MB for {4 * N}")


class _ClosedPipe(io.StringIO):
    """A reader that stops after the first write (`metering ... | head -1`)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        if not text:  # an empty write never reaches the pipe
            return 0
        self.writes += 1
        if self.writes > 1:
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(text)


async def test_a_reader_that_stops_is_not_a_failure(
    small: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pipe = _ClosedPipe()
    monkeypatch.setattr("sys.stdout", pipe)
    code = await asyncio.to_thread(
        main, ["--db", f"sqlite:///{small}", "ledger", "calls", "--format", "csv"]
    )
    assert code == 0 and pipe.getvalue().startswith("id,occurred_at,")
    assert capsys.readouterr().err == ""
