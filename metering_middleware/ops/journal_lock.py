"""One writer per journal file, across processes.

A journal belongs to one writer (``ledger/journal.py``): a writer replays the whole
file into the store and then truncates it, so a second process appending to the same
file between that replay and that truncate would lose a batch its clients were told
was durable. Several gateway processes on one ledger get the same default journal
path (``<ledger>.journal``) unless each is given its own ``journal_path``; this lock
turns that mistake into a refused start, naming the fix, instead of a silent loss.

An exclusive ``flock`` on ``<journal>.lock``, held from the runtime's start to its
stop (the kernel drops it if the process dies, so a crash never leaves it stale).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from ..ledger.store import StoreError

__all__ = ["JournalInUse", "JournalLock"]


class JournalInUse(StoreError):
    """Another process writes this journal."""


class JournalLock:
    """``acquire()`` and ``release()`` are blocking file calls: run them in a thread."""

    __slots__ = ("_fd", "_path")

    def __init__(self, journal: str | os.PathLike[str]) -> None:
        self._path = Path(str(journal) + ".lock")
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self._path

    def acquire(self) -> None:
        if self._fd is not None:
            return
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            journal = str(self._path)[: -len(".lock")]
            raise JournalInUse(
                f"the ledger journal {journal!r} is in use by another gateway process "
                f"(pid {holder}): give each process on one ledger its own journal_path "
                "(METERING_JOURNAL_PATH)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
