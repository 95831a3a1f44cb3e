"""The compiled hot modules (mypyc) against the pure-Python ones, in-process, A/B.

    .venv/bin/python -m metering_middleware._build          # first: a fresh build
    .venv/bin/python bench/compiled_bench.py                # 6 rounds x 5,000 calls, ~2 min

Each round runs ``inprocess_bench.py`` once with the compiled modules and once with
``METERING_PURE_PYTHON=1`` (the same tree's sources), each in its own process, in an
order that alternates round by round, so both sides share the machine's moods. The
figure per side is the median over rounds of the meter's added CPU per call (the median
call minus the bare app's); the ratio is the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
_ADDED = re.compile(r"added (-?[\d.]+) us")


def _round(pure: bool, calls: int, warm: int) -> float:
    env = {k: v for k, v in os.environ.items() if k != "METERING_PURE_PYTHON"}
    if pure:
        env["METERING_PURE_PYTHON"] = "1"
    cmd = [sys.executable, str(HERE / "inprocess_bench.py"), "--rounds", "1"]
    cmd += ["--calls", str(calls), "--warm", str(warm)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    found = _ADDED.search(done.stdout)
    if found is None:
        raise SystemExit(f"no figure in inprocess_bench's output:\n{done.stdout}{done.stderr}")
    return float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=5_000)
    parser.add_argument("--warm", type=int, default=1_000)
    args = parser.parse_args()
    check = subprocess.run(
        [sys.executable, "-m", "metering_middleware._build", "--check"],
        capture_output=True,
        text=True,
        check=True,
    )
    if "python  " in check.stdout or "older than" in check.stderr:
        raise SystemExit("compiled_bench: build first (python -m metering_middleware._build)")
    pure: list[float] = []
    compiled: list[float] = []
    for n in range(args.rounds):
        order = (True, False) if n % 2 == 0 else (False, True)
        for side in order:
            (pure if side else compiled).append(_round(side, args.calls, args.warm))
        print(
            f"round {n + 1}: pure +{pure[-1]:.1f} us, compiled +{compiled[-1]:.1f} us", flush=True
        )
    ratios = [c / p for c, p in zip(compiled, pure, strict=True)]

    def spread(xs: list[float]) -> str:
        return f"{statistics.median(xs):.1f} us ({min(xs):.1f}-{max(xs):.1f})"

    print(
        f"meter's added CPU per call, median of {args.rounds} rounds: pure +{spread(pure)}, "
        f"compiled +{spread(compiled)}; compiled / pure {statistics.median(ratios):.2f} "
        f"({min(ratios):.2f}-{max(ratios):.2f})"
    )


if __name__ == "__main__":
    main()
