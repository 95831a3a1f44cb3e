"""The gateway's own record ids: unique, time-ordered, made at admission.

ULID layout (48-bit milliseconds + 80 random bits, Crockford base32, 26
characters), so ids sort by admission time as text in every store, and journal
replays and retries are idempotent by id. The random part is drawn once per
generator (and per forked process) and incremented for every id, so ids from one
generator are strictly increasing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

__all__ = ["RecordIdFactory", "new_record_id", "record_id_time"]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DECODE = {c: i for i, c in enumerate(_ALPHABET)}
_RANDOM_BITS = 80
_RANDOM_MAX = (1 << _RANDOM_BITS) - 1


# Two base32 digits at a time: an id is made on every admitted call.
_PAIRS = tuple(a + b for a in _ALPHABET for b in _ALPHABET)


def _encode(value: int) -> str:
    pairs = _PAIRS
    return (
        _ALPHABET[value >> 125]
        + pairs[(value >> 115) & 1023]
        + pairs[(value >> 105) & 1023]
        + pairs[(value >> 95) & 1023]
        + pairs[(value >> 85) & 1023]
        + pairs[(value >> 75) & 1023]
        + pairs[(value >> 65) & 1023]
        + pairs[(value >> 55) & 1023]
        + pairs[(value >> 45) & 1023]
        + pairs[(value >> 35) & 1023]
        + pairs[(value >> 25) & 1023]
        + pairs[(value >> 15) & 1023]
        + pairs[(value >> 5) & 1023]
        + _ALPHABET[value & 31]
    )


def _fresh_random() -> int:
    # Top bit clear leaves room to increment 2**79 times.
    return int.from_bytes(os.urandom(10), "big") >> 1


class RecordIdFactory:
    """Strictly increasing ULIDs; ``time_ms`` is injectable for tests.

    The random part is drawn once per factory (and again in a forked child) and
    incremented for every id, not drawn again every millisecond: two processes (or a
    process and its restart) collide only if their 79-bit random starts lie within as
    many ids of each other in the same millisecond. The id's text is cached in parts:
    the millisecond's 10 characters until it changes, the random part's first 12 until
    its top 60 bits do, so an id is four strings joined (~6 µs of base32 before).
    """

    __slots__ = (
        "_forks",
        "_hi",
        "_hi_text",
        "_last_ms",
        "_last_rand",
        "_lock",
        "_ms_text",
        "_time_ms",
    )

    def __init__(self, time_ms: Callable[[], int] | None = None) -> None:
        import time

        self._time_ms = time_ms or (lambda: time.time_ns() // 1_000_000)
        self._last_ms = -1
        self._ms_text = ""
        self._hi = -1
        self._hi_text = ""
        # Ids are made on the event loop, but the CLI and tests may use threads.
        self._lock = threading.Lock()
        self._forks = _forks
        self._reseed()

    def _reseed(self) -> None:
        self._last_rand = _fresh_random() - 1  # the next id takes the drawn value itself

    def __call__(self) -> str:
        if self._forks != _forks:
            self._after_fork()
        with self._lock:
            ms = self._time_ms()
            rand = self._last_rand + 1
            if rand > _RANDOM_MAX:  # 2**79 ids since the draw: a new one, in the next ms
                ms = max(ms, self._last_ms + 1)
                rand = _fresh_random()
            if ms > self._last_ms:
                self._last_ms = ms
                self._ms_text = _encode(ms << _RANDOM_BITS)[:10]
            # else the same millisecond, or the wall clock stepped back: the last one's,
            # and the incremented random part keeps the ids increasing.
            self._last_rand = rand
            hi = rand >> 20
            if hi != self._hi:
                self._hi = hi
                self._hi_text = _encode(rand)[10:22]
            pairs = _PAIRS
            return self._ms_text + self._hi_text + pairs[(rand >> 10) & 1023] + pairs[rand & 1023]

    def _after_fork(self) -> None:
        # The first id of this factory in a forked child (a child that went on from its
        # parent's counter would make the parent's next ids): a new lock (the parent's
        # may have been held by a thread the child does not have) and a new draw. Checked
        # twice under the module's lock, so two threads of the child reseed it once.
        with _reseed_lock:
            if self._forks != _forks:
                self._lock = threading.Lock()
                self._reseed()
                self._forks = _forks


#: Forks this process descends from. A generation number rather than a set of weak
#: references to the factories: a compiled (mypyc) class cannot be weakly referenced,
#: and the check is one comparison per id.
_forks = 0
_reseed_lock = threading.Lock()


def _count_fork() -> None:
    global _forks, _reseed_lock
    _forks += 1
    _reseed_lock = threading.Lock()


os.register_at_fork(after_in_child=_count_fork)

new_record_id = RecordIdFactory()


def record_id_time(record_id: str) -> float:
    """Seconds since the epoch encoded in a record id."""
    value = 0
    for ch in record_id.upper():
        value = (value << 5) | _DECODE[ch]
    return (value >> _RANDOM_BITS) / 1000.0
