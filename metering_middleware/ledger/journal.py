"""The append-only fallback journal of the ledger writer.

When the store cannot take a batch, the writer appends it here and fsyncs
before telling anyone it is durable. The file is JSON lines, one object per
record (``{"r": {...}}``), counter (``{"c": {...}}``) or claimed signature
nonce (``{"n": {...}}``), written with the codec the stores use, so a replay
gives back exactly what was submitted. Nonces are read apart
(:meth:`Journal.replay_nonces`, only those still live), so the writer can put
them into the store before the records they came with.

Crash safety:

- Each batch is one ``write`` followed by ``fsync`` (and an fsync of the
  directory when the file is created), run in a thread so the event loop never
  blocks on the disk.
- A crash in the middle of an append leaves a *torn* final line without its
  newline. :meth:`Journal.replay` ignores it (it was never acknowledged), and
  the next append first ends the torn line with a newline so the new batch
  never merges into it. A damaged line in the middle is logged and skipped,
  never fatal: one bad line must not block the recovery of all the others.
- The file is opened for every append rather than kept open: if the journal's
  directory is removed, appends fail loudly instead of going to an unlinked
  file.

Replays are idempotent for records (stores ignore a record id they have); the
counters are additive, so a crash between the store's COMMIT of a replay and
the :meth:`Journal.truncate` that follows can count some calls twice in the
per-minute outcome counters (never in the records rating uses). Within one
process, a truncate that fails is not a problem: :attr:`Journal.replayed_to`
lets the writer replay only what was appended after the last replay.

One journal file belongs to one writer: two processes must not share a path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from .codec import (
    count_from_json,
    count_to_json,
    nonce_from_json,
    nonce_to_json,
    record_from_json,
    record_to_json,
)
from .records import CallRecord, ClaimedNonce, OutcomeCount

__all__ = ["Journal", "fsync_directory"]

_log = logging.getLogger("metering_middleware.ledger")
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class Journal:
    """JSON-lines journal at ``path`` (created on the first append)."""

    __slots__ = ("_path", "bytes", "records", "replayed_to")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        #: Byte offset just after the last complete line the last ``replay()`` read.
        self.replayed_to = 0
        #: Records this process appended since the journal was last emptied (a metric:
        #: records waiting for the store; a journal left by a crash is not counted).
        self.records = 0
        #: Bytes in the file as this process last saw them (:meth:`measure`, then each
        #: append and truncate): the metric, read on the event loop without a ``stat``.
        self.bytes = 0

    @property
    def path(self) -> Path:
        return self._path

    def __repr__(self) -> str:
        return f"Journal({str(self._path)!r})"

    async def append(
        self,
        records: Sequence[CallRecord],
        counts: Sequence[OutcomeCount] = (),
        nonces: Sequence[ClaimedNonce] = (),
    ) -> None:
        """Append one batch and fsync it; raise ``OSError`` if it is not durable."""
        if records or counts or nonces:
            self.bytes = await asyncio.to_thread(self._append_sync, records, counts, nonces)
            self.records += len(records)

    async def replay_nonces(self, now: float, start: int = 0) -> list[ClaimedNonce]:
        """The nonces appended since the last truncate (from byte ``start``) that are
        still held at ``now`` (epoch seconds); expired ones are nobody's concern."""
        return await asyncio.to_thread(self._replay_nonces_sync, now, start)

    async def replay(self, start: int = 0) -> tuple[list[CallRecord], list[OutcomeCount]]:
        """Everything appended since the last truncate, from byte ``start`` (a line
        boundary, such as an earlier ``replayed_to``), in memory at once: for tests and
        small journals; the writer streams with :meth:`chunks`."""
        records: list[CallRecord] = []
        counts: list[OutcomeCount] = []
        async for more, more_counts in self.chunks(start):
            records.extend(more)
            counts.extend(more_counts)
        return records, counts

    async def chunks(
        self, start: int = 0, *, size: int = 1000
    ) -> AsyncGenerator[tuple[list[CallRecord], list[OutcomeCount]], None]:
        """The journal from byte ``start`` in pieces of at most ``size`` entries.

        Memory stays bounded by ``size`` whatever the journal's length (an outage of
        hours journals millions of records). A torn final line is ignored, a damaged
        line skipped; ``replayed_to`` is the end of the last complete line read so far.
        """
        if size < 1:
            raise ValueError("size must be >= 1")
        reader = await asyncio.to_thread(_Reader.open, self, start)
        if reader is None:
            self.replayed_to = 0
            return
        try:
            while True:
                records, counts = await asyncio.to_thread(reader.read, size)
                self.replayed_to = reader.position
                if not records and not counts and reader.at_end:
                    break
                if records or counts:
                    yield records, counts
        finally:
            await asyncio.to_thread(reader.close)

    async def truncate(self) -> None:
        """Empty the journal (after the store has taken everything in it)."""
        await asyncio.to_thread(self._truncate_sync)
        self.records = self.bytes = 0

    async def measure(self) -> int:
        """Bytes in the journal now, read off the event loop (and kept in ``bytes``)."""
        self.bytes = await asyncio.to_thread(self.size)
        return self.bytes

    def size(self) -> int:
        """Bytes in the journal (0 when there is no file): a ``stat``, so blocking; on
        the event loop use :meth:`measure` or ``bytes``."""
        try:
            return self._path.stat().st_size
        except FileNotFoundError:
            return 0

    # -- in a worker thread ----------------------------------------------------------------

    def _append_sync(
        self,
        records: Sequence[CallRecord],
        counts: Sequence[OutcomeCount],
        nonces: Sequence[ClaimedNonce] = (),
    ) -> int:
        """Append and fsync; the file's size after it."""
        lines = [_dumps({"n": nonce_to_json(n)}) for n in nonces]
        lines.extend(_dumps({"r": record_to_json(r)}) for r in records)
        lines.extend(_dumps({"c": count_to_json(c)}) for c in counts)
        data = ("\n".join(lines) + "\n").encode("utf-8")
        created = not self._path.exists()
        fd = os.open(self._path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        size = 0
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # close a torn line left by a crash
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            # Not durable, so not acknowledged: the writer holds the batch and appends it
            # again later. Cut what this attempt wrote, or the counters in it would be
            # replayed twice (records are idempotent by id; counters add up).
            try:
                os.ftruncate(fd, size)
            except OSError:
                _log.warning("could not cut a failed append from %s", self._path)
            raise
        finally:
            os.close(fd)
        if created:
            fsync_directory(self._path.parent)
        return size + len(data)

    def _replay_nonces_sync(self, now: float, start: int) -> list[ClaimedNonce]:
        nonces: list[ClaimedNonce] = []
        try:
            with self._path.open("rb") as file:
                file.seek(start)
                for line in file:  # line by line: only nonce lines are kept
                    if line.startswith(b'{"n":'):
                        try:
                            nonce = nonce_from_json(json.loads(line)["n"])
                        except (ValueError, KeyError, TypeError):
                            continue  # torn or damaged: replay() reports damaged lines
                        if nonce.expires_at > now:
                            nonces.append(nonce)
        except FileNotFoundError:
            pass
        return nonces

    def _truncate_sync(self) -> None:
        try:
            fd = os.open(self._path, os.O_WRONLY | os.O_TRUNC)
        except FileNotFoundError:
            fd = -1
        if fd >= 0:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self.replayed_to = 0


class _Reader:
    """A journal file read line by line in a worker thread (one call at a time)."""

    __slots__ = ("_file", "_path", "at_end", "bad", "position")

    def __init__(self, file: BinaryIO, path: Path, start: int) -> None:
        self._file = file
        self._path = path
        self.position = start  # just after the last complete line
        self.at_end = False
        self.bad = 0

    @classmethod
    def open(cls, journal: Journal, start: int) -> _Reader | None:
        try:
            file = journal.path.open("rb")
        except FileNotFoundError:
            return None
        file.seek(start)
        return cls(file, journal.path, start)

    def read(self, size: int) -> tuple[list[CallRecord], list[OutcomeCount]]:
        records: list[CallRecord] = []
        counts: list[OutcomeCount] = []
        while len(records) + len(counts) < size:
            line = self._file.readline()
            if not line:
                self.at_end = True
                break
            if not line.endswith(b"\n"):
                self._final_line(line, records, counts)
                self.at_end = True
                break
            self.position += len(line)
            if line.strip() and not _parse(line, records, counts):
                self.bad += 1
        return records, counts

    def _final_line(
        self, tail: bytes, records: list[CallRecord], counts: list[OutcomeCount]
    ) -> None:
        if _parse(tail, records, counts):
            # Complete but for its newline: the data is whole, so keep it.
            self.position += len(tail)
            _log.info("ledger journal %s: final line had no newline; kept", self._path)
        else:
            _log.warning(
                "ledger journal %s: ignored a torn final line (%d bytes) from an "
                "interrupted append",
                self._path,
                len(tail),
            )

    def close(self) -> None:
        self._file.close()
        if self.bad:
            _log.error("ledger journal %s: skipped %d damaged lines", self._path, self.bad)


def _parse(line: bytes, records: list[CallRecord], counts: list[OutcomeCount]) -> bool:
    """Decode one line into ``records``/``counts``; False if it is not a valid entry."""
    try:
        entry: Any = json.loads(line)
        if not isinstance(entry, dict):
            return False
        if "r" in entry:
            records.append(record_from_json(entry["r"]))
        elif "c" in entry:
            counts.append(count_from_json(entry["c"]))
        elif "n" in entry:
            nonce_from_json(entry["n"])  # checked here; read by ``replay_nonces``
        else:
            return False
    except (ValueError, KeyError, TypeError):  # JSONDecodeError and UnicodeError are ValueErrors
        return False
    return True


def fsync_directory(path: Path) -> None:
    # Makes the new file's directory entry durable; not possible everywhere (e.g. Windows).
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
