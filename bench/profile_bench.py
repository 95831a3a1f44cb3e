"""Where a metered call's instructions go, by function: the profile behind issue 10's levers.

    .venv/bin/python bench/profile_bench.py                 # callgrind by C function, ~3 min
    .venv/bin/python bench/profile_bench.py --python        # cProfile by Python function, ~10 s

Runs the loop of ``instructions_bench.py`` (the same in-process meter, pre-signed V3
DetectFace calls, batched SQLite ledger) twice under ``valgrind --tool=callgrind
--dump-instr=no``, with ``--base`` and ``--base + --calls`` timed calls, reads both profiles
with ``callgrind_annotate`` and prints, per function, the difference divided by ``--calls``:
instructions per call, exclusive (the function's own) and inclusive (with its callees),
setup and warm-up cancelled out. CPython's functions are C functions (the eval loop,
dict lookups, allocation, ...): that says *what kind* of work a call does. ``--python``
runs the same loop under ``cProfile`` instead and prints the Python functions by their
own time per call and calls per call (cProfile's overhead inflates small functions;
read the counts, and the order, not the microseconds).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))

import instructions_bench  # noqa: E402

_LINE = re.compile(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*?)\s*$")


def _annotate(out: Path, inclusive: bool) -> Counter[str]:
    text = subprocess.run(
        [
            "callgrind_annotate",
            "--threshold=100",
            "--auto=no",
            "--show-percs=no",
            f"--inclusive={'yes' if inclusive else 'no'}",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found: Counter[str] = Counter()
    body = text.split("file:function", 1)[-1]
    for line in body.splitlines():
        m = _LINE.match(line)
        if m and ":" in m.group(2):
            found[m.group(2)] += int(m.group(1).replace(",", ""))
    return found


def _callgrind(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="profile-out-") as tmp:
        outs = []
        for n in (args.base, args.base + args.calls):
            out = Path(tmp) / f"{n}.out"
            ns = argparse.Namespace(**{**vars(args), "enforce": False, "bare": False})
            instructions_bench._count(ns, n, out, extra=["--dump-instr=no"])
            outs.append(out)
        for inclusive in (False, True):
            low, high = (_annotate(o, inclusive) for o in outs)
            diff = {k: (high[k] - low.get(k, 0)) / args.calls for k in high}
            total = sum(v for v in diff.values()) if not inclusive else None
            kind = "inclusive" if inclusive else "exclusive"
            print(f"\n## top {args.top} functions by {kind} instructions per call")
            if total is not None:
                print(f"(sum of exclusive: {total:,.0f} per call)")
            for name, cost in sorted(diff.items(), key=lambda kv: -kv[1])[: args.top]:
                print(f"{cost:>10,.0f}  {name}")


def _python(args: argparse.Namespace) -> None:
    profile = cProfile.Profile()
    with tempfile.TemporaryDirectory(prefix="profile-py-") as tmp:

        async def run() -> None:
            await instructions_bench._run(
                Path(tmp) / "l.sqlite",
                args.warm,
                args.calls,
                False,
                False,
                args.calls,
                profile=profile,
            )

        asyncio.run(run())
    stats = pstats.Stats(profile)
    rows = []
    for (file, line, name), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((tt, ct, nc, f"{Path(file).name}:{line}({name})"))
    print(f"## top {args.top} Python functions by own time ({args.calls} calls)")
    print(f"{'own µs/call':>11} {'incl µs/call':>12} {'calls/call':>10}  function")
    for tt, ct, nc, name in sorted(rows, reverse=True)[: args.top]:
        c = args.calls
        print(f"{tt / c * 1e6:>11.2f} {ct / c * 1e6:>12.2f} {nc / c:>10.2f}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--base", type=int, default=200)
    parser.add_argument("--warm", type=int, default=300)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--python", action="store_true", help="cProfile instead of callgrind")
    args = parser.parse_args()
    if args.python:
        _python(args)
    else:
        _callgrind(args)


if __name__ == "__main__":
    main()
