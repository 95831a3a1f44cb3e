"""The comparison users make: the meter against what they would run without it, one command.

    .venv/bin/python bench/compare.py                     # 5 rounds, ~2 s a server run: ~5 min
    .venv/bin/python bench/compare.py --rounds 7 --seconds 3
    .venv/bin/python bench/compare.py --smoke             # 1 round, tiny counts: does it run?

Every round runs three families, each measured by the bench that owns it:

- **servers** (``meter_bench.py``, servers from ``apps.py``, each in its own process,
  CPU per request from ``/proc``, wrk or aiohttp replaying pre-signed requests): the
  trivial app bare, metered batched and strict, and a do-it-yourself stack (Starlette +
  slowapi + an SQLite commit per request); the example proxy bare, metered batched and
  strict, and a default Starlette + httpx proxy. Variants rotate within the round.
- **writer** (``writer_bench.py``): the ledger writer (strict, 64 submitters) against
  plain ``executemany`` of the same rows in 1,000-row transactions.
- **in-process** (``inprocess_bench.py``): the meter's CPU per call without HTTP, the
  median call against the bare app's median call.

The report gives each comparison as the median of per-round ratios (a variant against
its baseline run of the same round) with the rounds' min-max, CPU µs per request, and
the issue's targets beside the ratios they constrain. ``--smoke`` checks only that
everything runs, every response was a 200 and every metered server's ledger holds one
record per 200 (the families stop with an error otherwise); its numbers mean nothing.
``--json PATH`` writes every run's figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from inprocess_bench import InProcess, meter_round
from meter_bench import Bench, Run, calibrate, load_average, machine_line, one_round, report
from writer_bench import make_records, run_plain, run_writer

SERVERS = [
    "trivial",
    "trivial+batched",
    "trivial+strict",
    "diy+slowapi",
    "proxy",
    "gateway+batched",
    "gateway+strict",
    "proxy-httpx",
]


@dataclass(frozen=True, slots=True)
class Comparison:
    label: str
    variant: str
    baseline: str
    target: float | None  # the floor for the req/s ratio, if it sets one
    cpu_target: float | None = None  # its ceiling for the CPU µs a call the variant adds


COMPARISONS = [
    Comparison("trivial app: metered batched / bare", "trivial+batched", "trivial", 0.38, 75),
    Comparison("trivial app: metered strict / bare", "trivial+strict", "trivial", 0.34, 90),
    Comparison("trivial app: DIY (slowapi + SQLite) / bare", "diy+slowapi", "trivial", None),
    Comparison("metered batched / DIY", "trivial+batched", "diy+slowapi", 2.5),
    Comparison("metered strict / DIY", "trivial+strict", "diy+slowapi", 2.5),
    Comparison("proxy: metered batched / bare", "gateway+batched", "proxy", 0.90),
    Comparison("proxy: metered strict / bare", "gateway+strict", "proxy", 0.90),
    Comparison("proxy: Starlette+httpx / example proxy", "proxy-httpx", "proxy", None),
    Comparison("metered proxy batched / Starlette+httpx", "gateway+batched", "proxy-httpx", None),
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class WriterRound:
    writer_rows_s: float
    writer_cpu_us: float
    plain_rows_s: float
    plain_cpu_us: float


def writer_round(tmp: Path, tag: str, records: int) -> WriterRound:
    rows = make_records(records)
    wall, cpu, _ = asyncio.run(run_writer(tmp / f"writer-{tag}.db", rows))
    plain_wall, plain_cpu = run_plain(tmp / f"plain-{tag}.db", rows, 1000)
    for path in tmp.glob(f"*-{tag}.db*"):
        path.unlink()
    return WriterRound(
        writer_rows_s=records / wall,
        writer_cpu_us=cpu * 1e6 / records,
        plain_rows_s=records / plain_wall,
        plain_cpu_us=plain_cpu * 1e6 / records,
    )


def _med(values: list[float], fmt: str) -> str:
    """Median (min-max)."""
    median, low, high = (format(x, fmt) for x in (statistics.median(values), *_ends(values)))
    return f"{median} ({low} to {high})"


def _ends(values: list[float]) -> tuple[float, float]:
    return min(values), max(values)


def comparisons_table(runs: dict[str, list[Run]]) -> str:
    lines = [
        "| comparison | req/s ratio, median (min-max) | target | met "
        "| CPU µs/req: variant / baseline | CPU µs/req difference, median (min-max) "
        "| target | met |",
        "| --- | ---: | ---: | :---: | ---: | ---: | ---: | :---: |",
    ]
    for c in COMPARISONS:
        if c.variant not in runs or c.baseline not in runs:
            continue
        pairs = list(zip(runs[c.variant], runs[c.baseline], strict=True))
        ratios = [v.rps / b.rps for v, b in pairs]
        added = [v.cpu_us - b.cpu_us for v, b in pairs]
        target = met = cpu_target = cpu_met = "-"
        if c.target is not None:
            target = f">= {c.target:g}"
            met = "yes" if statistics.median(ratios) >= c.target else "**no**"
        if c.cpu_target is not None:
            cpu_target = f"<= +{c.cpu_target:g}"
            cpu_met = "yes" if statistics.median(added) <= c.cpu_target else "**no**"
        cpu_v = statistics.median(r.cpu_us for r in runs[c.variant])
        cpu_b = statistics.median(r.cpu_us for r in runs[c.baseline])
        lines.append(
            f"| {c.label} | {_med(ratios, '.2f')} | {target} | {met} "
            f"| {cpu_v:.0f} / {cpu_b:.0f} | {_med(added, '+.0f')} | {cpu_target} | {cpu_met} |"
        )
    return "\n".join(lines)


def writer_table(rounds: list[WriterRound]) -> str:
    ratio = _med([r.writer_rows_s / r.plain_rows_s for r in rounds], ".2f")
    writer_rate = _med([r.writer_rows_s for r in rounds], ",.0f")
    plain_rate = _med([r.plain_rows_s for r in rounds], ",.0f")
    writer_cpu = _med([r.writer_cpu_us for r in rounds], ".1f")
    plain_cpu = _med([r.plain_cpu_us for r in rounds], ".1f")
    return "\n".join(
        [
            "| ledger writer | rows/s, median (min-max) | CPU µs/row, median (min-max) "
            "| rows/s vs executemany, median (min-max) |",
            "| --- | ---: | ---: | ---: |",
            f"| LedgerWriter strict, 64 submitters | {writer_rate} | {writer_cpu} | {ratio} |",
            f"| executemany, 1,000-row transactions | {plain_rate} | {plain_cpu} | - |",
        ]
    )


def inprocess_table(rounds: list[InProcess]) -> str:
    return "\n".join(
        [
            "| in-process, batched (median call) | CPU µs per call, median of rounds (min-max) |",
            "| --- | ---: |",
            f"| bare trivial app | {_med([r.bare_us for r in rounds], '.1f')} |",
            f"| metered | {_med([r.metered_us for r in rounds], '.1f')} |",
            f"| the meter's added CPU | {_med([r.added_us for r in rounds], '+.1f')} |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="about this long a server run")
    parser.add_argument("--warmup", type=float, default=0.2, help="warm-up, share of a run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--client", choices=["wrk", "aiohttp"], default=None)
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--records", type=int, default=50_000, help="writer rows a round")
    parser.add_argument("--calls", type=int, default=10_000, help="in-process calls a round")
    parser.add_argument("--smoke", action="store_true", help="1 round, tiny counts, aiohttp")
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.records, args.calls, args.warmup = 1, 2000, 400, 0.0
        args.client = args.client or "aiohttp"  # CI needs nothing beyond the test extra
    args.client = args.client or ("wrk" if shutil.which("wrk") else "aiohttp")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    began = time.monotonic()
    print(machine_line(args), flush=True)
    servers: dict[str, list[Run]] = {v: [] for v in SERVERS}
    writer: list[WriterRound] = []
    inprocess: list[InProcess] = []
    with tempfile.TemporaryDirectory(prefix="compare-bench-") as tmp_name:
        tmp = Path(tmp_name)
        bench = Bench(args, tmp)
        if bench.other_cpu is not None:
            os.sched_setaffinity(0, {bench.other_cpu})  # the orchestrator off the server's CPU
        try:
            bench.start_mock()
            if args.smoke:
                counts, min_warm = dict.fromkeys(SERVERS, 100), 20
            else:
                counts, min_warm = calibrate(bench, SERVERS, args), 500
            for n in range(args.rounds):
                for variant, run in one_round(
                    bench, SERVERS, counts, n, args, min_warm=min_warm
                ).items():
                    servers[variant].append(run)
                w = writer_round(tmp, f"r{n}", args.records)
                writer.append(w)
                print(
                    f"round {n + 1} writer {w.writer_rows_s:,.0f} rows/s "
                    f"({w.writer_cpu_us:.1f} us/row), executemany {w.plain_rows_s:,.0f} "
                    f"({w.plain_cpu_us:.1f} us/row)",
                    flush=True,
                )
                p = meter_round(tmp, f"r{n}", args.calls, max(100, args.calls // 5))
                inprocess.append(p)
                print(
                    f"round {n + 1} in-process bare {p.bare_us:.1f} us, metered "
                    f"{p.metered_us:.1f} us (median call), ledger={p.charged}",
                    flush=True,
                )
        finally:
            bench.close()

    print("\n" + comparisons_table(servers))
    print("\n" + report(servers))
    print("\n" + writer_table(writer))
    print("\n" + inprocess_table(inprocess))
    print(f"\nwall time {time.monotonic() - began:.0f} s; load average {load_average()}")
    if args.json:
        data = {
            "servers": {v: [asdict(r) for r in rs] for v, rs in servers.items()},
            "writer": [asdict(w) for w in writer],
            "inprocess": [asdict(p) for p in inprocess],
        }
        args.json.write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
