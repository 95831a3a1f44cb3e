"""Benchmark: ``deduct`` over synthetic calls (default 1,000,000 over 1,000 accounts).

Each account uses 1-4 items of the default catalog (interleaved at random, the hard case for
runs) over two billing months. Plans are mixed: about half the accounts hold single-category
plans, a third general-purpose plans, a few a QPS subscription; some plans expire or are
refunded mid-range and many run out, so every code path (re-routing, tier crossings, month
and validity cuts) is exercised. Generation is not timed.

    .venv/bin/python bench/deduction_bench.py [--calls N] [--accounts N] [--rounds N]
                                              [--passes N] [--tracemalloc]

``--passes`` splits the calls into N consecutive slices deducted one after another,
carrying the state (as settlement will). ``--tracemalloc`` adds one traced round to report
the peak memory ``deduct`` itself allocates (tracing makes that round several times slower).
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import time
import tracemalloc
from datetime import timedelta

from synthetic import SPAN, START, make_plans

from metering_middleware.catalog import Catalog, default_catalog
from metering_middleware.ledger.records import CallRecord
from metering_middleware.rating import (
    DeductionResult,
    DeductionState,
    QpsSubscription,
    ResourcePlan,
    SourceKind,
    deduct,
)


def make_workload(
    calls: int, accounts: int, catalog: Catalog, seed: int
) -> tuple[list[CallRecord], list[ResourcePlan], list[QpsSubscription]]:
    rnd = random.Random(seed)
    billable = [it for it in catalog.items if not it.free]
    names = [f"acct-{i:05d}" for i in range(accounts)]
    uses = {name: rnd.sample(billable, rnd.randint(1, 4)) for name in names}
    both = make_plans(names, uses, calls // accounts, rnd)
    plans = [p for p in both if isinstance(p, ResourcePlan)]
    subs = [p for p in both if isinstance(p, QpsSubscription)]
    span_us = int(SPAN.total_seconds() * 1_000_000)
    offsets = sorted(rnd.randrange(span_us) for _ in range(calls))
    records = []
    for k, offset in enumerate(offsets):
        name = names[rnd.randrange(accounts)]
        it = rnd.choice(uses[name])
        records.append(
            CallRecord(
                id=f"{k:026d}",
                request_id=None,
                account=name,
                access_key_id="AK",
                category=it.category,
                action=it.action,
                version=it.version,
                item=it.item,
                occurred_at=START + timedelta(microseconds=offset),
                status=200,
                error_code=None,
                latency_ms=1.0,
            )
        )
    return records, plans, subs


def run_passes(
    records: list[CallRecord],
    plans: list[ResourcePlan],
    subs: list[QpsSubscription],
    catalog: Catalog,
    passes: int,
) -> DeductionResult:
    state = DeductionState()
    size = -(-len(records) // passes)
    result = None
    for i in range(passes):
        result = deduct(records[i * size : (i + 1) * size], plans, subs, catalog, state=state)
        state = result.state
    assert result is not None
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--passes", type=int, default=1)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--tracemalloc", action="store_true")
    args = parser.parse_args()

    catalog = default_catalog()
    t = time.perf_counter()
    records, plans, subs = make_workload(args.calls, args.accounts, catalog, args.seed)
    print(
        f"workload: {len(records):,} calls, {args.accounts:,} accounts, {len(plans):,} plans, "
        f"{len(subs):,} QPS subscriptions (generated in {time.perf_counter() - t:.1f} s)"
    )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    timings, cpu = [], []
    result = None
    for _ in range(args.rounds):
        t, c = time.perf_counter(), time.process_time()
        result = run_passes(records, plans, subs, catalog, args.passes)
        timings.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    assert result is not None
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    by_kind: dict[SourceKind, int] = {}
    for line in result.lines:
        by_kind[line.kind] = by_kind.get(line.kind, 0) + line.calls
    runs = sum(1 for _ in result.runs())
    print(
        f"deduct x{args.passes} pass(es): median {statistics.median(timings):.2f} s "
        f"(rounds: {', '.join(f'{x:.2f}' for x in timings)}), "
        f"{len(records) / statistics.median(timings):,.0f} calls/s; "
        f"CPU median {statistics.median(cpu):.2f} s"
    )
    print(f"settled by: {', '.join(f'{k}={v:,}' for k, v in sorted(by_kind.items()))}")
    print(f"lines: {len(result.lines):,}; runs of one source: {runs:,}")
    print(f"max RSS: {rss_before:,.0f} MiB after generation, {rss_after:,.0f} MiB after deduct")
    if args.tracemalloc:
        tracemalloc.start()
        run_passes(records, plans, subs, catalog, args.passes)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"tracemalloc peak allocated by deduct: {peak / 2**20:,.0f} MiB")


if __name__ == "__main__":
    main()
