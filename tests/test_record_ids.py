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


def test_ids_are_unique_across_factories_in_the_same_millisecond() -> None:
    # Two processes (or a process and its restart) at the same instant: separate draws.
    now = 1_767_225_600_000
    a, b = RecordIdFactory(lambda: now), RecordIdFactory(lambda: now)
    ids_a = [a() for _ in range(5000)]
    ids_b = [b() for _ in range(5000)]
    assert len(set(ids_a) | set(ids_b)) == 10_000
    assert ids_a == sorted(ids_a) and ids_b == sorted(ids_b)


def test_a_forked_child_draws_its_own_random_part() -> None:
    import os

    make = RecordIdFactory(lambda: 1_767_225_600_000)
    make()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the ids it makes right after the fork
        try:
            os.write(write, "".join(make() for _ in range(100)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = pipe.read().decode()
    os.waitpid(pid, 0)
    parent = "".join(make() for _ in range(100))
    child_ids = {child[i : i + 26] for i in range(0, len(child), 26)}
    parent_ids = {parent[i : i + 26] for i in range(0, len(parent), 26)}
    assert len(child_ids) == 100 and not child_ids & parent_ids


def test_the_cached_text_is_the_full_encoding() -> None:
    now = [1_767_225_600_000]
    make = RecordIdFactory(lambda: now[0])
    for step in range(3000):
        if step % 7 == 0:
            now[0] += 1
        made = make()
        value = (now[0] << 80) | make._last_rand
        assert made == _encode(value)
    # Across a change of the random part's top 60 bits too.
    make._last_rand = (1 << 40) - 3
    for _ in range(6):
        made = make()
        assert made == _encode((now[0] << 80) | make._last_rand)
