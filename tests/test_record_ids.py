"""Record ids: unique, strictly increasing, time-ordered ULIDs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from metering_middleware.ledger.ids import RecordIdFactory, _encode, record_id_time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _reference(value: int) -> str:
    digits = []
    for _ in range(26):
        digits.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(digits))


@given(st.integers(min_value=0, max_value=(1 << 128) - 1))
def test_encoding_matches_the_plain_base32_reference(value: int) -> None:
    assert _encode(value) == _reference(value)


def test_ids_increase_within_and_across_milliseconds() -> None:
    now = [1_767_225_600_000]
    make = RecordIdFactory(lambda: now[0])
    ids = [make() for _ in range(1000)]
    now[0] += 1
    ids += [make() for _ in range(10)]
    now[0] -= 5  # the wall clock stepped back: ids must not
    ids += [make() for _ in range(10)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(len(i) == 26 for i in ids)
    assert record_id_time(ids[0]) == 1_767_225_600.0
    assert record_id_time(ids[1005]) == 1_767_225_600.001
