"""Exports that scan many records: written as they are read, with an optional progress bar.

Rows arrive in pages (the ledger's keyset pages, :meth:`LedgerStore.iter_calls`); each
page is formatted (:class:`~.._output.RowStream`: the same bytes ``render`` prints) and
written in a worker thread, so neither a million rows in memory nor a blocking write on
the event loop. The progress bar is ``tqdm`` on stderr, never stdout: shown when stderr
is a terminal or when asked for; tqdm is imported only then (the ``reports`` extra).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol, TextIO

from .._output import RowStream

__all__ = ["ProgressUnavailable", "progress_bar", "stream_export"]


class ProgressUnavailable(RuntimeError):
    """A progress bar was asked for and tqdm is not installed."""


class _Bar(Protocol):
    def update(self, n: int) -> object: ...

    def close(self) -> None: ...


def progress_bar(total: int | None, err: TextIO, *, required: bool) -> _Bar | None:
    """A tqdm bar on ``err``; None without tqdm unless ``required`` (then an error)."""
    try:
        from tqdm import tqdm
    except ImportError:
        if required:
            raise ProgressUnavailable(
                "--progress needs tqdm: pip install 'metering_middleware[reports]'"
            ) from None
        return None
    bar: _Bar = tqdm(total=total, file=err, unit=" rows", leave=False)
    return bar


def _write(out: TextIO, text: str, bar: _Bar | None, n: int) -> None:
    if text:
        out.write(text)
    if bar is not None and n:
        bar.update(n)


async def stream_export(
    pages: AsyncIterator[Sequence[Mapping[str, Any]]],
    columns: Sequence[str],
    fmt: str,
    out: TextIO,
    *,
    bar: _Bar | None = None,
) -> int:
    """Write ``pages`` to ``out`` as JSON (one array) or CSV; return the rows written."""
    stream = RowStream(columns, fmt)
    written = 0
    try:
        await asyncio.to_thread(_write, out, stream.head(), None, 0)
        async for page in pages:
            await asyncio.to_thread(_write, out, stream.rows(page), bar, len(page))
            written += len(page)
        await asyncio.to_thread(_write, out, stream.tail(), None, 0)
        await asyncio.to_thread(out.flush)
    finally:
        if bar is not None:
            bar.close()
    return written
