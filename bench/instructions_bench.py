"""Instructions per metered call, counted by valgrind (callgrind): steady on a shared machine.

    .venv/bin/python bench/instructions_bench.py                  # ~1-2 min
    .venv/bin/python bench/instructions_bench.py --calls 3000 --enforce

Wall and CPU time on a loaded 2-core VM swing 10-30% from run to run; the number of
instructions the interpreter executes for a call does not. This runs the in-process
meter of ``inprocess_bench.py`` (batched ledger on a real SQLite file, the QPS limiter on,
pre-signed V3 DetectFace calls, one after another, a loop yield between calls) under
``valgrind --tool=callgrind`` twice, with ``--base`` and ``--base + --calls`` timed calls
after the same warm-up, and prints the difference of the two runs' totals divided by
``--calls``: setup, imports and warm-up cancel out, the SQLite worker thread's commits
do not (they are part of what a call costs, as in a server's CPU time). The meter runs on
a clock the bench moves by 1 ms a call, so the writer's commits and the limiter's window
fall on the same calls in every run (wall time under valgrind is ~50x slower).

``--enforce`` turns on the standing check and spend guard (``enforce_balance``, a
balance that pays every call). ``--bare`` counts the trivial app alone (the baseline).
Needs ``valgrind`` on the PATH; nothing here is timed.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()


async def _run(
    path: Path,
    warm: int,
    calls: int,
    enforce: bool,
    bare: bool,
    sign: int,
    profile: cProfile.Profile | None = None,
) -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    from apps import bench_catalog, trivial_app
    from standing_bench import KEY, SECRET, _receive, _send, signed_scopes

    from metering_middleware import MeteringConfig, MeteringMiddleware, MeteringRuntime
    from metering_middleware.clock import ManualClock, SystemClock
    from metering_middleware.credentials import CredentialManager, SecretBox
    from metering_middleware.ledger import SqliteStore

    logging.getLogger("metering_middleware").setLevel(logging.ERROR)
    store = SqliteStore(path)
    await store.open()
    await CredentialManager(store, SecretBox(None), SystemClock()).add(
        "acme", SECRET, access_key_id=KEY
    )
    await store.close()
    if enforce:
        from metering_middleware.rating import BalanceEntry, EntryKind, SqliteRatingStore

        now = datetime.now(UTC)
        async with SqliteRatingStore(path) as rating:
            topup = BalanceEntry("topup:bench", "acme", EntryKind.TOPUP, Decimal(10**9), now, now)
            await rating.post_entries([topup], now)
    config = MeteringConfig(ledger_url=f"sqlite:///{path}", mode="batched", enforce_balance=enforce)
    # A clock the bench moves, 1 ms a call: the writer's flush deadlines and the limiter's
    # window fall on the same calls in every run, whatever valgrind does to wall time.
    clock = ManualClock(time.time())
    runtime = MeteringRuntime(config, catalog=bench_catalog(), clock=clock)
    meter = MeteringMiddleware(trivial_app, runtime=runtime)
    app = trivial_app if bare else meter
    # Both runs sign the same number of calls (signing is the client's work, ~20 µs a
    # call): only the calls sent differ.
    scopes = signed_scopes(warm + sign)[: warm + calls]
    async with runtime:
        for i, scope in enumerate(scopes):
            if profile is not None and i == warm:
                profile.enable()  # profile_bench.py --python: the calls after the warm-up
            await app(scope, _receive, _send)
            await asyncio.sleep(0)
            clock.advance(0.001)
        if profile is not None:
            profile.disable()


def _child(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(HERE.parent))
    with tempfile.TemporaryDirectory(prefix="instr-bench-") as tmp:
        asyncio.run(
            _run(Path(tmp) / "l.sqlite", args.warm, args.n, args.enforce, args.bare, args.sign)
        )


def _count(args: argparse.Namespace, n: int, out: Path, extra: list[str] | None = None) -> int:
    cmd = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        *(extra or []),
        sys.executable,
        str(HERE),
        "--child",
        "--n",
        str(n),
        "--warm",
        str(args.warm),
        "--sign",
        str(args.base + args.calls),
    ]
    if args.enforce:
        cmd.append("--enforce")
    if args.bare:
        cmd.append("--bare")
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
    if done.returncode != 0:
        raise SystemExit(f"valgrind run failed:\n{done.stderr[-2000:]}")
    found = re.findall(r"Collected : (\d+)", done.stderr)
    if not found:
        raise SystemExit(f"no instruction count in valgrind's output:\n{done.stderr[-2000:]}")
    return sum(int(x) for x in found)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--base", type=int, default=500)
    parser.add_argument("--warm", type=int, default=500)
    parser.add_argument("--enforce", action="store_true")
    parser.add_argument("--bare", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--sign", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("instructions_bench: valgrind is not installed")
    with tempfile.TemporaryDirectory(prefix="instr-out-") as tmp:
        low = _count(args, args.base, Path(tmp) / "low.out")
        high = _count(args, args.base + args.calls, Path(tmp) / "high.out")
    what = "bare app" if args.bare else "metered" + (" + enforce_balance" if args.enforce else "")
    print(f"{what}: {(high - low) / args.calls:,.0f} instructions per call ({args.calls} calls)")


if __name__ == "__main__":
    main()
