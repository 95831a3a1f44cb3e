"""The gateway's own record ids: unique, time-ordered, made at admission.

ULID layout (48-bit milliseconds + 80 random bits, Crockford base32, 26
characters), so ids sort by admission time as text in every store, and journal
replays and retries are idempotent by id. Within one millisecond the random
part is incremented, so ids from one generator are strictly increasing.
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


class RecordIdFactory:
    """Strictly increasing ULIDs; ``time_ms`` is injectable for tests."""

    __slots__ = ("_last_ms", "_last_rand", "_lock", "_time_ms")

    def __init__(self, time_ms: Callable[[], int] | None = None) -> None:
        import time

        self._time_ms = time_ms or (lambda: time.time_ns() // 1_000_000)
        self._last_ms = -1
        self._last_rand = 0
        # Ids are made on the event loop, but the CLI and tests may use threads.
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            ms = self._time_ms()
            if ms <= self._last_ms:
                ms = self._last_ms
                rand = self._last_rand + 1
                if rand > _RANDOM_MAX:  # 2**80 ids in one ms: move to the next ms
                    ms += 1
                    rand = int.from_bytes(os.urandom(10), "big") >> 1
            else:
                # Top bit clear leaves room to increment within a millisecond.
                rand = int.from_bytes(os.urandom(10), "big") >> 1
            self._last_ms, self._last_rand = ms, rand
            return _encode((ms << _RANDOM_BITS) | rand)


new_record_id = RecordIdFactory()


def record_id_time(record_id: str) -> float:
    """Seconds since the epoch encoded in a record id."""
    value = 0
    for ch in record_id.upper():
        value = (value << 5) | _DECODE[ch]
    return (value >> _RANDOM_BITS) / 1000.0
