"""Each notice the settled results call for fires exactly once: across repeated passes,
restarted settlers, and (low balance) only again after the balance came back."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from metering_middleware.notices import NoticeKind
from metering_middleware.notices.detectors import detect_in_file
from metering_middleware.notices.recorder import NoticeRecorder
from metering_middleware.rating import list_plans
from tests.rating.helpers import plan, qps, utc

from .support import Ledger, ids, notices

START = utc(2026, 3, 2, 6)


async def test_a_plan_at_20_percent_of_its_points_is_noticed_once(tmp_path: Path) -> None:
    h = Ledger(tmp_path / "l.db", START)
    async with h:
        end = START + timedelta(days=300)
        await h.rating.add_plan(plan("rp-1", "single", ["ocr"], 100, START, end), START)
        await h.calls(5)  # 75 of 100 points: 25 left, above 20%
    await h.settle_pass()
    assert ids(h.path, NoticeKind.PLAN_POINTS_LOW) == []
    async with h:
        await h.calls(1)  # 90 used: 10 left
    for _ in range(3):  # repeated passes, each by a new settler (a restarted gateway)
        await h.settle_pass()
    found = notices(h.path, NoticeKind.PLAN_POINTS_LOW)
    assert [n["id"] for n in found] == ["plan.points_low:acct:rp-1"]
    async with h:
        (view,) = await list_plans(h.rating)  # what `metering plans list` shows
    assert json.loads(found[0]["data"])["remaining"] == str(view.remaining) == "10"
    assert found[0]["attempts"] == 0 and found[0]["delivered_at"] is None  # delivery owed


async def test_exactly_20_percent_is_low_and_a_refunded_plan_is_not(tmp_path: Path) -> None:
    h = Ledger(tmp_path / "l.db", START)
    async with h:
        end = START + timedelta(days=300)
        await h.rating.add_plan(plan("rp-a", "single", ["ocr"], 75, START, end), START)
        await h.calls(4)  # 60 of 75 points: exactly 20% left
    await h.settle_pass()
    assert ids(h.path, NoticeKind.PLAN_POINTS_LOW) == ["plan.points_low:acct:rp-a"]

    g = Ledger(tmp_path / "g.db", START)
    async with g:
        end = START + timedelta(days=300)
        await g.rating.add_plan(plan("rp-b", "single", ["ocr"], 75, START, end), START)
        await g.calls(4)
        await g.rating.add_refund("rp-b", g.clock.now(), g.clock.now(), None)
    await g.settle_pass()
    assert ids(g.path, NoticeKind.PLAN_POINTS_LOW) == []


async def test_plans_ending_within_7_days_are_noticed_once(tmp_path: Path) -> None:
    h = Ledger(tmp_path / "l.db", START)
    ends = START + timedelta(days=10)
    async with h:
        await h.rating.add_plan(plan("rp-1", "general", ["ocr"], 1000, START, ends), START)
        await h.rating.add_plan(qps("q-1", "facebody", "DetectFace", START, ends), START)
        # Renewed: the next period starts when this one ends; it is not about to lapse.
        await h.rating.add_plan(qps("q-2", "ocr", "RecognizeLicensePlate", START, ends), START)
        renewal = qps("q-3", "ocr", "RecognizeLicensePlate", ends, ends + timedelta(days=30))
        await h.rating.add_plan(renewal, START)
        # Refunded: it covers nothing any more, nothing to warn about.
        await h.rating.add_plan(qps("q-4", "imageseg", "SegmentBody", START, ends), START)
        await h.rating.add_refund("q-4", START, START, None)
        await h.calls(1)
    await h.settle_pass()
    assert ids(h.path, NoticeKind.PLAN_EXPIRING) == []  # 10 days out
    h.clock.set(START + timedelta(days=3, hours=1))  # 6 days 23 hours before the end
    for _ in range(3):
        await h.settle_pass()
    assert ids(h.path, NoticeKind.PLAN_EXPIRING) == [
        "plan.expiring:acct:rp-1",
        "plan.expiring:acct:q-1",
    ]
    data = json.loads(notices(h.path, NoticeKind.PLAN_EXPIRING)[1]["data"])
    assert data == {
        "plan": "q-1",
        "kind": "qps",
        "end": ends.isoformat(),
        "api": "facebody/DetectFace",
    }
    h.clock.set(ends + timedelta(days=25))  # the renewal's end is near now
    await h.settle_pass()
    assert ids(h.path, NoticeKind.PLAN_EXPIRING)[-1] == "plan.expiring:acct:q-3"
    assert len(ids(h.path, NoticeKind.PLAN_EXPIRING)) == 3


async def test_balance_below_threshold_once_per_episode(tmp_path: Path) -> None:
    h = Ledger(tmp_path / "l.db", START)
    async with h:
        await h.settings("acct", low_balance="10")
        await h.topup("acct", "11")
        await h.calls(6)  # 0.90 spent: 10.10 left
    await h.settle_pass()
    assert ids(h.path, NoticeKind.BALANCE_LOW) == []
    async with h:
        await h.calls(1)  # 9.95
    for _ in range(3):
        await h.settle_pass()
    first = ids(h.path, NoticeKind.BALANCE_LOW)
    assert len(first) == 1
    assert json.loads(notices(h.path, NoticeKind.BALANCE_LOW)[0]["data"]) == {
        "balance": "9.95",
        "threshold": "10",
    }
    async with h:
        await h.calls(2)  # still below: the same episode, no new notice
    await h.settle_pass()
    assert ids(h.path, NoticeKind.BALANCE_LOW) == first
    async with h:
        await h.topup("acct", "5")  # 14.65: back above
    await h.settle_pass()
    assert ids(h.path, NoticeKind.BALANCE_LOW) == first
    async with h:
        await h.calls(40)  # 8.65: a new episode
    await h.settle_pass()
    await h.settle_pass()
    second = ids(h.path, NoticeKind.BALANCE_LOW)
    assert len(second) == 2 and second[0] == first[0] and second[1] != first[0]


async def test_a_monthly_cap_reached_by_settled_spend_once_per_month(tmp_path: Path) -> None:
    h = Ledger(tmp_path / "l.db", START)
    async with h:
        await h.topup("acct", "100")
        await h.settings("acct", monthly_cap="0.5")
        await h.calls(3)  # 0.45
    await h.settle_pass()
    assert ids(h.path, NoticeKind.CAP_REACHED) == []
    async with h:
        await h.calls(1)  # 0.60
    await h.settle_pass()
    # The spend guard's notice of the same month has the same id: still one.
    recorder = NoticeRecorder(h.path, h.clock)
    await recorder.start()
    assert recorder.cap_reached("acct", "2026-03", cap=Decimal("0.5"), spend=Decimal("0.6"))
    await recorder.stop()
    await h.settle_pass()
    found = notices(h.path, NoticeKind.CAP_REACHED)
    assert [n["id"] for n in found] == ["account.cap_reached:acct:2026-03"]
    assert json.loads(found[0]["data"])["source"] == "settled"
    h.clock.set(utc(2026, 4, 2, 6))  # April: a new month, a new cap
    async with h:
        await h.calls(4)
    await h.settle_pass()
    await h.settle_pass()
    assert ids(h.path, NoticeKind.CAP_REACHED) == [
        "account.cap_reached:acct:2026-03",
        "account.cap_reached:acct:2026-04",
    ]


async def test_the_guard_can_be_first_and_settlement_does_not_repeat_it(tmp_path: Path) -> None:
    h = Ledger(tmp_path / "l.db", START)
    async with h:
        await h.topup("acct", "100")
        await h.settings("acct", monthly_cap="0.5")
        await h.calls(4)
    recorder = NoticeRecorder(h.path, h.clock)
    await recorder.start()
    recorder.cap_reached("acct", "2026-03", cap=Decimal("0.5"), spend=Decimal("0.6"))
    await recorder.stop()
    assert recorder.recorded == 1
    await h.settle_pass()
    found = notices(h.path, NoticeKind.CAP_REACHED)
    assert len(found) == 1 and json.loads(found[0]["data"])["source"] == "guard"


async def test_other_tenants_notices_stay_theirs(tmp_path: Path) -> None:
    """Thresholds and caps are per account: one account's spend notices nobody else."""
    h = Ledger(tmp_path / "l.db", START)
    async with h:
        for name in ("acct", "globex"):
            await h.topup(name, "10.2")
            await h.settings(name, low_balance="10", monthly_cap="0.3")
        await h.calls(3, account="globex")
    await h.settle_pass()
    assert {n["account"] for n in notices(h.path)} == {"globex"}
    assert len(notices(h.path)) == 2  # balance.low and cap_reached


async def test_detection_alone_is_idempotent(tmp_path: Path) -> None:
    h = Ledger(tmp_path / "l.db", START)
    async with h:
        await h.settings("acct", low_balance="1")  # balance 0: below
    first = detect_in_file(h.path, h.clock.now())
    again = detect_in_file(h.path, h.clock.now() + timedelta(hours=1))
    assert [n.kind for n in first] == [NoticeKind.BALANCE_LOW] and again == []


async def test_removing_the_threshold_ends_the_episode(tmp_path: Path) -> None:
    h = Ledger(tmp_path / "l.db", START)
    async with h:
        await h.settings("acct", low_balance="1")
    await h.settle_pass()
    async with h:
        await h.settings("acct")  # no threshold: no episode either
    h.clock.advance(60)
    await h.settle_pass()
    async with h:
        await h.settings("acct", low_balance="1")  # still at 0: a new episode
    h.clock.advance(60)
    await h.settle_pass()
    assert len(ids(h.path, NoticeKind.BALANCE_LOW)) == 2


async def test_detectors_racing_on_one_ledger_record_each_notice_once(tmp_path: Path) -> None:
    """The gateway's settler and `metering settle` may detect at the same moment."""
    h = Ledger(tmp_path / "l.db", START)
    async with h:
        for i in range(30):
            await h.settings(f"a{i}", low_balance="1", monthly_cap="0.1")
            await h.calls(1, account=f"a{i}")
    await h.settle_pass()
    conn = sqlite3.connect(h.path)
    try:  # forget them, as if no pass had detected yet
        conn.execute("DELETE FROM notice_outbox")
        conn.execute("DELETE FROM notices")
        conn.execute("DELETE FROM notice_low_balance")
        conn.commit()
    finally:
        conn.close()
    now = h.clock.now()
    # Each at its own instant: a low-balance episode they both started would have two ids.
    results = await asyncio.gather(
        *(asyncio.to_thread(detect_in_file, h.path, now + timedelta(seconds=i)) for i in range(4))
    )
    assert sum(len(r) for r in results) == 60
    assert len(notices(h.path)) == 60 and len(ids(h.path, NoticeKind.BALANCE_LOW)) == 30
