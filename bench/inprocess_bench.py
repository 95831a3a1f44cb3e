"""The meter's CPU per call in-process: the median call, not the best slice.

    .venv/bin/python bench/inprocess_bench.py                 # 5 rounds x 10,000 calls

One ``MeteringMiddleware`` (batched ledger on a real SQLite file, the QPS limiter on,
``apps.trivial_app`` inside) driven without HTTP with pre-signed DetectFace calls, one
after another, against the same trivial app called bare. The two alternate in runs of
``standing_bench.RUN`` calls (bare, metered, metered, bare, ...), so both share the
machine's moods. Each call's cost is the event loop thread's CPU time
(``time.thread_time_ns``); the ledger's commits run in its worker thread and are not in
it, so this is the meter's Python on the request path. Between calls the bench yields
to the loop once, outside the timed call, as a server's loop runs its other tasks.

The figure per round: the median metered call minus the median bare call. Each round
opens a fresh meter on a fresh ledger, warms it with ``warm`` calls, and checks after
closing it that the ledger holds one record per metered call.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from apps import bench_catalog, trivial_app
from meter_bench import ledger_calls
from standing_bench import KEY, RUN, SECRET, _receive, _send, signed_scopes

__all__ = ["InProcess", "meter_round"]


@dataclass(frozen=True, slots=True)
class InProcess:
    bare_us: float  # median bare call
    metered_us: float  # median metered call
    calls: int  # metered calls timed
    charged: int  # ledger records after the round (warm-up included)

    @property
    def added_us(self) -> float:
        return self.metered_us - self.bare_us


async def _meter_round(path: Path, calls: int, warm: int) -> InProcess:
    from metering_middleware import MeteringConfig, MeteringMiddleware, MeteringRuntime
    from metering_middleware.clock import SystemClock
    from metering_middleware.credentials import CredentialManager, SecretBox
    from metering_middleware.ledger import SqliteStore

    logging.getLogger("metering_middleware").setLevel(logging.ERROR)  # the plain-text key
    store = SqliteStore(path)
    await store.open()
    await CredentialManager(store, SecretBox(None), SystemClock()).add(
        "acme", SECRET, access_key_id=KEY
    )
    await store.close()
    runtime = MeteringRuntime(
        MeteringConfig(ledger_url=f"sqlite:///{path}", mode="batched"), catalog=bench_catalog()
    )
    meter = MeteringMiddleware(trivial_app, runtime=runtime)
    scopes = signed_scopes(warm + calls)
    clock = time.thread_time_ns
    bare: list[int] = []
    metered: list[int] = []
    async with runtime:
        for scope in scopes[:warm]:
            await meter(scope, _receive, _send)
            await asyncio.sleep(0)
        for i, scope in enumerate(scopes[warm:]):
            on = (i // RUN) % 4 in (1, 2)  # bare metered metered bare: no periodic bias
            app = meter if on else trivial_app
            started = clock()
            await app(scope, _receive, _send)
            spent = clock() - started
            await asyncio.sleep(0)
            (metered if on else bare).append(spent)
    return InProcess(
        bare_us=statistics.median(bare) / 1000,
        metered_us=statistics.median(metered) / 1000,
        calls=len(metered),
        charged=ledger_calls(path),
    )


def meter_round(tmp: Path, tag: str, calls: int, warm: int) -> InProcess:
    """One round on a fresh meter and ledger; stops if a record is missing."""
    path = tmp / f"inprocess-{tag}.sqlite"
    result = asyncio.run(_meter_round(path, calls, warm))
    if result.charged != warm + result.calls:
        raise SystemExit(
            f"in-process meter: the ledger holds {result.charged} records "
            f"for {warm + result.calls} metered calls"
        )
    for file in path.parent.glob(path.name + "*"):
        file.unlink()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--warm", type=int, default=2_000)
    args = parser.parse_args()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="inprocess-bench-") as tmp:
        for n in range(args.rounds):
            r = meter_round(Path(tmp), f"r{n}", args.calls, args.warm)
            rounds.append(r)
            print(
                f"round {n + 1}: bare {r.bare_us:.1f} us, metered {r.metered_us:.1f} us, "
                f"added {r.added_us:.1f} us per call (median call)",
                flush=True,
            )
    added = [r.added_us for r in rounds]
    print(
        f"meter's CPU per call in-process: +{statistics.median(added):.1f} us "
        f"(rounds {min(added):.1f}-{max(added):.1f})"
    )


if __name__ == "__main__":
    main()
