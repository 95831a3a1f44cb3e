"""One settlement (or re-rating) pass: which records, in which order, from which state.

Private to :mod:`.settlement`, whose docstring explains the model. The pass reads the
ledger month by month (so a month's records are in memory at once, not the ledger's),
deducts every account of the month together, and keeps per account: lines, the state at
each month's start (a checkpoint), the last key it deducted and its new state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from ..catalog import Catalog
from ..ledger.records import CallRecord
from ._accounts import Account, cut_segments, last_keys, merge_states, park, split_state
from ._reports import SettleProgress, SettleReport
from ._rows import gc_paused
from .deduction import deduct
from .months import Month, billing_month
from .plans import QpsSubscription, ResourcePlan
from .state import DeductionState
from .store import (
    AccountProgress,
    AccountWrite,
    Adjustment,
    CallBatch,
    MoneyMarks,
    PlanBook,
    Progress,
    RatingStore,
    SettledKey,
    SettlementWrites,
)

__all__: list[str] = []

_US = timedelta(microseconds=1)
Candidate = tuple[SettledKey, CallRecord, Adjustment | None]


class _Since:
    """Months from ``first`` on, and a few earlier ones."""

    def __init__(self, first: Month, also: set[Month]) -> None:
        self.first, self.also = first, also

    def __contains__(self, month: object) -> bool:
        return isinstance(month, Month) and (month >= self.first or month in self.also)


class Pass:
    def __init__(
        self,
        store: RatingStore,
        catalog: Catalog,
        *,
        now: datetime,
        horizon: datetime | None,  # None: re-rate what is settled, settle nothing new
        grace: timedelta,
        account: str | None,
        rerate_from: Month | None,
        owner: str,
        renew: Callable[[], Awaitable[None]],
        progress: Callable[[SettleProgress], None] | None,
    ) -> None:
        self.store, self.catalog, self.now, self.grace = store, catalog, now, grace
        self.horizon, self.account, self.rerate_from = horizon, account, rerate_from
        self.rerating = rerate_from is not None
        self.owner, self.renew, self.progress = owner, renew, progress
        self.accounts: dict[str, Account] = {}
        self.regular: dict[Month, list[CallRecord]] = {}
        self.extra: dict[Month, list[tuple[Adjustment, CallRecord]]] = {}
        self.placed: set[int] = set()
        self.known: dict[int, Adjustment] = {}
        self.new_adjustments: dict[int, Adjustment] = {}
        self.deferred: set[int] = set()
        self.book = PlanBook((), (), 0, 0)
        self.plans_of: dict[str, list[ResourcePlan]] = {}
        # Per account, its refunded plans and subscriptions with their cuts (refund_cut).
        self.refunds_of: dict[str, list[tuple[ResourcePlan | QpsSubscription, datetime]]] = {}
        self.working = DeductionState()
        self.parked = DeductionState()  # what the pass cannot change (see _park)
        self.plans: list[ResourcePlan] = []
        self.subs: list[QpsSubscription] = []
        self.max_seq = 0
        self.low: tuple[int, datetime | None] = (0, None)  # marks shared by the bulk
        self.target = now  # the bulk's target
        self.bulk = False  # whether accounts are read together (a full settle)
        self.global_marks: Progress | None = None
        self.total = 0

    # -- setting up ------------------------------------------------------------------------

    async def run(self) -> SettleReport:
        await self._load()
        cands = {} if self.rerating else await self._collect()
        await self._decide(cands)
        # Replaying accounts hold their checkpoint's state by now, the others their latest.
        self.working = merge_states(a.state for a in self.accounts.values())
        span = await self._month_span()
        if span is not None:
            self._park(span[0])
            month, last = span
            while month <= last or any(m >= month for m in self.extra):
                await self._month(month)
                month = month.next()
        return await self._finish()

    async def _load(self) -> None:
        self.book = await self.store.plan_book(account=self.account)
        for plan in self.book.plans:
            self.plans_of.setdefault(plan.account, []).append(plan)
        every: list[ResourcePlan | QpsSubscription] = [*self.book.plans, *self.book.subscriptions]
        for p in every:
            cut = self.book.refund_cut(p)
            if cut is not None and p.refunded_at is not None:
                self.refunds_of.setdefault(p.account, []).append((p, cut))
        g = self.global_marks = await self.store.progress()
        rows = await self.store.accounts(account=self.account)
        self.max_seq = await self.store.max_seq()
        self.low = (g.seen, g.horizon) if g is not None else (0, None)
        self.bulk = self.account is None and not self.rerating
        base = self.horizon if self.horizon is not None else self.now
        self.target = base if self.low[1] is None else max(self.low[1], base)
        since = self.rerate_from
        for name, row in rows.items():
            seen, horizon = (row.seen, row.horizon) if g is None or row.seen >= g.seen else self.low
            if since is not None:  # re-rating: accounts settled into that month or later
                if row.frontier is None or row.frontier[0] < since:
                    continue
                target = horizon
            else:
                target = base if horizon is None else max(horizon, base)
            a = Account(name, seen, horizon, target or base, row.frontier, row.state)
            a.own_reads = not self.bulk or (seen, horizon) != self.low
            a.month = None if row.frontier is None else row.frontier[0]
            a.replay_from = since
            self.accounts[name] = a
        if self.account is not None and self.account not in self.accounts and not self.rerating:
            a = self._account(self.account)
            a.own_reads = True

    def _account(self, name: str) -> Account:
        a = self.accounts.get(name)
        if a is None:
            a = Account(name, self.low[0], self.low[1], self.target, None, DeductionState())
            self.accounts[name] = a
        return a

    async def _collect(self) -> dict[str, dict[int, Candidate]]:
        """Records that landed behind the marks, and adjustments left pending."""
        horizons = [a.horizon for a in self.accounts.values() if a.own_reads and a.horizon]
        if self.bulk and self.low[1] is not None:
            horizons.append(self.low[1])
        cands: dict[str, dict[int, Candidate]] = {}
        if not horizons:
            return cands
        pending = await self.store.adjustments(account=self.account, effective_from=min(horizons))
        self.known = {adj.seq: adj for adj in pending}
        read: set[int] = set()
        if self.bulk and self.low[1] is not None:
            batch = await self.store.read_new(self.low[0], self.max_seq, self.low[1])
            read.update(self._route_batch(batch, cands, skip_own=True))
        for a in [a for a in self.accounts.values() if a.own_reads and a.horizon is not None]:
            assert a.horizon is not None
            batch = await self.store.read_new(a.seen, self.max_seq, a.horizon, account=a.name)
            read.update(self._route_batch(batch, cands))
        missing = [seq for seq in self.known if seq not in read]
        if missing:
            self._route_batch(await self.store.read_seqs(missing), cands)
        return cands

    def _route_batch(
        self, batch: CallBatch, cands: dict[str, dict[int, Candidate]], *, skip_own: bool = False
    ) -> list[int]:
        """Route the batch's records; the seqs it routed (a record of an account with reads
        of its own is skipped with ``skip_own``: it is not routed, so a pending adjustment
        among them is still fetched by seq, not lost behind the account's marks)."""
        routed: list[int] = []
        for i, record in enumerate(batch.records):
            a = self._account(record.account)
            if skip_own and a.own_reads:
                continue
            routed.append(batch.seqs[i])
            found = self._route(a, record, batch.seqs[i], batch.arrived.get(i), None)
            if found is not None:
                cands.setdefault(a.name, {})[batch.seqs[i]] = found
        return routed

    def _route(
        self,
        a: Account,
        record: CallRecord,
        seq: int,
        arrived: datetime | None,
        month: Month | None,
    ) -> Candidate | None:
        """Where ``record`` goes in ``a``'s order, or None if this pass leaves it alone."""
        adj = a.adj.get(seq) or self.known.get(seq)
        # A record is classified once, when first settled: a settled one keeps its class.
        if adj is None and arrived is not None and not self.rerating:
            adj = (
                None
                if a.settled(seq, record.occurred_at)
                else self._classify(a, record, seq, arrived)
            )
        if adj is not None:
            a.adj[seq] = adj
            key, effective = adj.key, adj.effective_at
        else:
            effective = record.occurred_at
            key = (month or billing_month(effective), effective, effective, record.id)
        if a.settled(seq, effective):
            return (key, record, adj) if self.rerating or a.replaying else None
        if self.rerating:
            return None
        if effective >= a.target:
            self.deferred.add(seq)
            return None
        return key, record, adj

    def _classify(
        self, a: Account, record: CallRecord, seq: int, arrived: datetime
    ) -> Adjustment | None:
        """An adjustment if it arrived after its month closed (billing rules section 7), or
        after the refund of a plan that was valid when it occurred (section 6: a refunded
        plan covers no call after the refund, including records of earlier calls that
        arrive later). Either way it is deducted at its arrival and displaces nothing the
        refund (or the close) was computed from."""
        origin = billing_month(record.occurred_at)
        if arrived < origin.end + self.grace and not self._after_refund(a, record, arrived):
            return None
        # Billed in the earliest month still open when it arrived (its own, if still open).
        billed = max(origin, billing_month(arrived - self.grace))
        adj = Adjustment(seq, record.id, a.name, record.occurred_at, origin, billed, arrived)
        self.new_adjustments[seq] = adj
        return adj

    def _refunded_by(self, plan: ResourcePlan | QpsSubscription, when: datetime) -> bool:
        cut = self.book.refund_cut(plan)
        return cut is not None and cut <= when

    def _after_refund(self, a: Account, record: CallRecord, arrived: datetime) -> bool:
        cuts = self.refunds_of.get(a.name)
        if not cuts:
            return False
        at = record.occurred_at
        return any(
            p.start <= at < p.effective_end and cut <= arrived
            for p, cut in cuts
            if p.refunded_at is not None and at < p.refunded_at
        )

    async def _decide(self, cands: dict[str, dict[int, Candidate]]) -> None:
        """Continue each account from its state, or re-rate it from a checkpoint."""
        for name, found in cands.items():
            a = self.accounts[name]
            for key, _, _ in found.values():
                if a.frontier is not None and key < a.frontier:
                    a.replay_from = key[0] if a.replay_from is None else min(a.replay_from, key[0])
        g = self.global_marks
        if not self.rerating:
            changes = await self.store.plan_changes(
                g.plan_seq if g else 0, g.refund_seq if g else 0
            )
            for change in changes:
                changed = self.accounts.get(change.account)
                if changed is None or changed.frontier is None or changed.horizon is None:
                    continue
                month = billing_month(change.at)
                if change.at < changed.horizon and month <= changed.frontier[0]:
                    old = changed.replay_from
                    changed.replay_from = month if old is None else min(old, month)
        for a in self.accounts.values():
            if a.replay_from is not None:
                await self._start_replay(a, cands.get(a.name, {}))
        for name, found in cands.items():
            a = self.accounts[name]
            if not a.replaying:
                for candidate in found.values():
                    self._place(candidate, self.regular.setdefault(candidate[0][0], []))

    async def _start_replay(self, a: Account, found: dict[int, Candidate]) -> None:
        assert a.replay_from is not None
        news = [adj for _, _, adj in found.values() if adj is not None]
        month = a.replay_from
        while True:
            checkpoint = await self.store.checkpoint(a.name, month)
            start = month if checkpoint is None else checkpoint[0]
            # Every adjustment deducted from ``start`` on (it arrived since), due now.
            stored = await self.store.adjustments(account=a.name, effective_from=start.start)
            due = {adj.seq: adj for adj in stored if self._due(a, adj)}
            due.update((adj.seq, adj) for adj in news if adj.deducted_in >= start)
            # One billed before ``start`` (it arrived in the grace days of its billed month)
            # has its line there: the replay restarts from that month, so the lines it
            # replaces (billed from its start on) are exactly the lines it deducts.
            earliest = min((adj.billed for adj in due.values()), default=start)
            if earliest >= start:
                break
            month = earliest
        if checkpoint is None:
            a.start, a.state, a.month = start, DeductionState(), None
        else:
            a.start, a.state = checkpoint
            a.month = a.start
        a.own_reads = True
        a.lines.clear()
        for adj in stored:
            a.adj[adj.seq] = adj  # so reads of its months never take it for a regular record
        records = {seq: c[1] for seq, c in found.items() if c[2] is not None}
        missing = [seq for seq in due if seq not in records]
        if missing:
            batch = await self.store.read_seqs(missing)
            records.update(zip(batch.seqs, batch.records, strict=True))
        for seq, adj in due.items():
            self._place((adj.key, records[seq], adj), [])

    def _due(self, a: Account, adj: Adjustment) -> bool:
        """Whether a stored adjustment is deducted by this pass (if its account replays)."""
        if self.rerating:
            return a.settled(adj.seq, adj.effective_at)
        return adj.effective_at < a.target

    def _place(self, candidate: Candidate, regular: list[CallRecord]) -> None:
        _, record, adj = candidate
        if adj is None:
            regular.append(record)
        elif adj.seq not in self.placed:
            self.placed.add(adj.seq)
            self.extra.setdefault(adj.deducted_in, []).append((adj, record))

    async def _month_span(self) -> tuple[Month, Month] | None:
        firsts: list[Month] = [*self.regular, *self.extra]
        lasts: list[Month] = [*self.regular, *self.extra]
        if self.bulk:
            low = self.low[1] or await self.store.first_occurred()
            if low is not None:
                firsts.append(billing_month(low))
                lasts.append(billing_month(self.target - _US))
        for a in self.accounts.values():
            if not a.own_reads:
                continue
            low = a.start.start if a.start else a.horizon
            low = low or await self.store.first_occurred(account=a.name)
            if low is not None:
                firsts.append(billing_month(low))
                lasts.append(billing_month(max(a.target, low + _US) - _US))
        return (min(firsts), max(lasts)) if firsts else None

    def _park(self, first: Month) -> None:
        """Set aside what this pass cannot change: positions of earlier months (but those of
        adjustments' own months) and plans that ended before anything it deducts."""
        adjusted = [adj for pairs in self.extra.values() for adj, _ in pairs]
        earliest = min([first.start, *(adj.occurred_at for adj in adjusted)])
        self.plans = [p for p in self.book.plans if p.effective_end > earliest]
        self.subs = [s for s in self.book.subscriptions if s.effective_end > earliest]
        origins = {adj.origin for adj in adjusted}
        months = _Since(first, origins)
        self.working, self.parked = park(self.working, months, {p.id for p in self.plans})

    # -- the month loop --------------------------------------------------------------------

    async def _month(self, m: Month) -> None:
        regular = self.regular.pop(m, [])
        # Only records that arrived after the month closed, or after a refund that ends a
        # plan they occurred under, can be adjustments: read arrivals from the earlier.
        arrived_from = m.end + self.grace
        for cuts in self.refunds_of.values():
            for _, cut in cuts:
                if m.start < cut < arrived_from:
                    arrived_from = cut
        if self.bulk:
            lo = m.start if self.low[1] is None else max(self.low[1], m.start)
            hi = min(self.target, m.end)
            if lo < hi:
                batch = await self.store.read_range(
                    lo, hi, max_seq=self.max_seq, arrived_from=arrived_from
                )
                self._route_bulk(m, batch, regular)
        for a in [a for a in self.accounts.values() if a.own_reads]:
            if a.start is not None:
                if m < a.start:
                    continue
                lo = m.start
            else:
                lo = m.start if a.horizon is None else max(a.horizon, m.start)
            hi = min(a.target, m.end)
            if lo < hi:
                seq = a.seen if self.rerating else self.max_seq
                batch = await self.store.read_range(
                    lo, hi, max_seq=seq, account=a.name, arrived_from=arrived_from
                )
                for i, record in enumerate(batch.records):
                    if batch.seqs[i] in self.placed:
                        continue
                    found = self._route(a, record, batch.seqs[i], batch.arrived.get(i), m)
                    if found is not None:
                        self._place(found, regular)
        adjust = self.extra.pop(m, [])
        if regular or adjust:
            n = await asyncio.to_thread(self._deduct, m, regular, adjust)
            self.total += n
            if self.progress is not None:
                self.progress(SettleProgress(m, n, self.total))
            await self.renew()

    def _route_bulk(self, m: Month, batch: CallBatch, regular: list[CallRecord]) -> None:
        """Most rows go straight to deduction; only flagged ones are looked at one by one."""
        records, seqs = batch.records, batch.seqs
        picks = set(batch.arrived)
        if self.known or self.placed:
            picks.update(i for i, s in enumerate(seqs) if s in self.known or s in self.placed)
        own = {a.name for a in self.accounts.values() if a.own_reads}
        if own:
            picks.update(i for i, r in enumerate(records) if r.account in own)
        prev = 0
        for i in sorted(picks):
            regular.extend(records[prev:i])
            prev = i + 1
            record = records[i]
            a = self._account(record.account)
            if a.own_reads or seqs[i] in self.placed:
                continue
            found = self._route(a, record, seqs[i], batch.arrived.get(i), m)
            if found is not None:
                self._place(found, regular)
        regular.extend(records[prev:])

    def _deduct(
        self, m: Month, regular: list[CallRecord], adjust: list[tuple[Adjustment, CallRecord]]
    ) -> int:
        """Deduct month ``m``: regular records, with each arrival's adjustments cut in at
        their place (deduction sorts by time, adjustments go by arrival)."""
        before = self.working
        segments = cut_segments(regular, adjust)
        touched: set[str] = set()
        count = 0
        with gc_paused():
            for records, adjs in segments:
                plans, subs = self.plans, self.subs
                if adjs is not None:
                    # Deducted at its arrival: a plan refunded by then covers it no more.
                    arrival = min(adj.effective_at for adj in adjs)
                    plans = [p for p in plans if not self._refunded_by(p, arrival)]
                    subs = [p for p in subs if not self._refunded_by(p, arrival)]
                result = deduct(
                    records,
                    plans,
                    subs,
                    self.catalog,
                    state=self.working,
                )
                self.working = result.state
                billed = m if adjs is None else adjs[0].billed  # one per segment
                for line in result.lines:
                    self._account(line.account).add_line(billed, line)
                    touched.add(line.account)
                    count += line.calls
                if adjs is None:
                    for name, key in last_keys(result.records, m).items():
                        self.accounts[name].reach(key)
                else:
                    for adj in adjs:
                        self.accounts[adj.account].reach(adj.key)
        # The state at the month's start, for each account that has records in it (and the
        # months it skipped since its last checkpoint, which start from the same state).
        behind = [name for name in touched if self.accounts[name].month != m]
        states = split_state(before, behind, self.plans_of, self.parked)
        for name in behind:
            a = self.accounts[name]
            month = m if a.month is None else a.month.next()
            while month <= m:
                a.checkpoints.append((month, states[name]))
                month = month.next()
            a.month = m
        return count

    # -- results ---------------------------------------------------------------------------

    async def _finish(self) -> SettleReport:
        writing = [a for a in self.accounts.values() if a.calls or a.replaying or a.own_reads]
        if self.rerating:
            writing = [a for a in writing if a.replaying]
        states = split_state(self.working, [a.name for a in writing], self.plans_of, self.parked)
        writes: list[AccountWrite] = []
        for a in writing:
            frontier = a.frontier
            if a.reached is not None and (frontier is None or a.reached > frontier):
                frontier = a.reached
            # A re-rated account's lines are replaced from its restart month; the others'
            # lines are added to (the store sums them exactly).
            progress = AccountProgress(
                account=a.name,
                seen=a.seen if self.rerating else self.max_seq,
                horizon=a.target,
                frontier=frontier,
                state=states[a.name],
                updated_at=self.now,
            )
            writes.append(AccountWrite(progress, a.start, a.bill_lines(), tuple(a.checkpoints)))
        marks = None
        if self.bulk:
            marks = Progress(
                self.max_seq, self.target, self.book.plan_seq, self.book.refund_seq, self.now
            )
        new = tuple(self.new_adjustments.values())
        closed_through = None
        if not self.rerating:
            # A month has closed once the horizon is past its end plus the grace days.
            closed_through = billing_month(self.target - self.grace).previous()
        money = MoneyMarks(self.now, closed_through, self.account, rerate=self.rerating)
        await self.store.commit(self.owner, SettlementWrites(tuple(writes), new, marks, money))
        return SettleReport(
            horizon=None if self.rerating else self.target,
            accounts=sum(1 for a in self.accounts.values() if a.calls),
            records=self.total,
            adjustments=len(new),
            deferred=len(self.deferred),
            rerated=tuple(sorted(a.name for a in self.accounts.values() if a.replaying)),
        )
