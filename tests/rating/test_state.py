import json
from datetime import timedelta
from decimal import Decimal

import pytest

from metering_middleware.catalog import default_catalog
from metering_middleware.rating import DeductionError, DeductionState, Month, deduct

from .helpers import DETECT, calls_between, plan, utc


def test_state_round_trips_through_json() -> None:
    state = DeductionState(
        {"p1": Decimal("4985.16"), "p2": Decimal(0)},
        {
            ("a", "ocr.RecognizeLicensePlate", Month(2026, 1)): 15_000,
            ("b", DETECT, Month(2026, 2)): 1,
        },
    )
    plain = state.to_plain()
    assert plain["positions"]["a"]["ocr.RecognizeLicensePlate"] == {"2026-01": 15_000}
    back = DeductionState.from_plain(json.loads(json.dumps(plain)))
    assert back == state
    assert back.position("a", "ocr.RecognizeLicensePlate", Month(2026, 1)) == 15_000
    assert back.position("a", "ocr.RecognizeLicensePlate", Month(2026, 2)) == 0


def test_bad_state_is_refused() -> None:
    with pytest.raises(DeductionError, match="p1"):
        DeductionState({"p1": Decimal(-1)})
    with pytest.raises(DeductionError, match="int"):
        DeductionState({}, {("a", "i", Month(2026, 1)): -3})
    with pytest.raises(DeductionError, match="decimal"):
        DeductionState.from_plain({"remaining": {"p1": "lots"}})
    with pytest.raises(ValueError, match="YYYY-MM"):
        DeductionState.from_plain({"positions": {"a": {"i": {"Jan": 3}}}})


def test_state_with_more_points_than_the_plan_is_refused() -> None:
    catalog = default_catalog()
    p = plan("p1", "single", {"facebody"}, 10, utc(2026, 1, 1), utc(2027, 1, 1))
    with pytest.raises(DeductionError, match="more points"):
        deduct([], [p], [], catalog, state=DeductionState({"p1": Decimal(11)}))


def test_persisted_state_continues_a_pass_exactly() -> None:
    catalog = default_catalog()
    p = plan("p1", "single", {"facebody"}, "100.00", utc(2026, 1, 1), utc(2027, 1, 1))
    calls = calls_between(catalog, 1_000, utc(2026, 3, 1), timedelta(seconds=7), DETECT)
    whole = deduct(calls, [p], [], catalog)
    first = deduct(calls[:400], [p], [], catalog)
    revived = DeductionState.from_plain(json.loads(json.dumps(first.state.to_plain())))
    second = deduct(calls[400:], [p], [], catalog, state=revived)
    assert second.state == whole.state
    assert whole.remaining["p1"] == 0  # 100 points cover 625 calls at 0.16
    assert sum(ln.calls for ln in whole.lines if ln.plan_id == "p1") == 625
    assert [s for _, s in first.settled()] + [s for _, s in second.settled()] == [
        s for _, s in whole.settled()
    ]
    # Plans missing from a pass keep their state untouched.
    assert deduct([], [], [], catalog, state=revived).remaining == revived.remaining
