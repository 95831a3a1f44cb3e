"""The meter's cost: a trivial VIAPI-like app and the example proxy, bare vs metered.

    .venv/bin/python bench/meter_bench.py                 # 7 rounds x ~3 s per variant
    .venv/bin/python bench/meter_bench.py --rounds 9 --seconds 5 --variants trivial,trivial+strict

Each server runs in its own process (``bench/apps.py``): uvicorn, one worker,
uvloop + httptools, on its own CPU when there are two; the mock VIAPI (upstream
of the proxy variants) and the load generator share the other CPU. A server is
started afresh for every measurement, on a fresh SQLite ledger when metered.

Requests are signed before the timed window (``bench/loadgen.py``) and fired by
wrk (``bench/replay.lua``; ``apt-get install wrk``) or, without it, by aiohttp,
over 32 keep-alive connections. Bare variants get the very same signed requests.
A first calibration pass (not reported) sets each variant's request count to
about ``--seconds`` of its own throughput; every round then warms the server up
(``--warmup`` of that count) and times the count. Every response must be a 200,
and a metered server's ledger must hold exactly one record per 200 it answered,
or the bench stops: a run that measured refusals would be worthless.

CPU per request is the server process's utime + stime (all its threads, the
ledger's SQLite thread included) from ``/proc/<pid>/stat`` over the timed
window, divided by the requests in it. Rounds interleave the variants (the order
rotates each round) and the report gives medians and min-max.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import resource
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from apps import METER_VARIANTS, VARIANTS, is_metered, uses_meter
from loadgen import ACCESS_KEY_ID, SECRET, Replay, RequestPool, replay_wrk

HERE = Path(__file__).resolve()
CALIBRATION = (500, 2000)  # warm-up, timed: enough to estimate each variant's rate
MIN_COUNT = 1000


@dataclass(frozen=True, slots=True)
class Run:
    rps: float
    cpu_us: float
    p50_ms: float
    busy: float  # server CPU over the window's wall time: near 1.0 when it was the bottleneck
    client_busy: float  # the load generator's, likewise
    charged: int | None  # ledger records after the run (metered variants)


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        two = (os.cpu_count() or 1) >= 2 and not args.no_pin
        self.server_cpu: int | None = 0 if two else None
        self.other_cpu: int | None = 1 if two else None
        self.pool = RequestPool(tmp / "requests.bin")
        self.upstream: str | None = None
        self.processes: list[subprocess.Popen[bytes]] = []

    def pinned(self, cpu: int | None) -> Callable[[], None] | None:
        if cpu is None:
            return None
        return lambda: os.sched_setaffinity(0, {cpu})

    def spawn(self, role_args: list[str], cpu: int | None) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        command = [sys.executable, str(HERE), "--role", "serve", "--port", str(port), *role_args]
        process = subprocess.Popen(command, preexec_fn=self.pinned(cpu))
        self.processes.append(process)
        wait_listening(port, process)
        return process, port

    def start_mock(self) -> None:
        _, port = self.spawn(["--variant", "mock"], self.other_cpu)
        self.upstream = f"http://127.0.0.1:{port}"

    def replay(self, url: str, first: int, count: int) -> Replay:
        self.pool.ensure(first + count)
        if self.args.client == "wrk":
            return replay_wrk(
                url,
                self.pool,
                first,
                count,
                concurrency=self.args.concurrency,
                preexec=self.pinned(self.other_cpu),
            )
        command = [sys.executable, str(HERE), "--role", "load", "--url", url]
        command += ["--pool", str(self.pool.path), "--size", str(self.pool.size)]
        command += ["--first", str(first), "--count", str(count)]
        command += ["--concurrency", str(self.args.concurrency)]
        out = subprocess.run(
            command, check=True, capture_output=True, preexec_fn=self.pinned(self.other_cpu)
        ).stdout
        return Replay(**json.loads(out))

    def run(self, variant: str, warm: int, count: int, tag: str) -> Run:
        role = ["--variant", variant]
        ledger: Path | None = None
        if is_metered(variant):
            ledger = self.tmp / f"{tag}-{variant}.sqlite"
            if uses_meter(variant):
                asyncio.run(create_ledger(ledger))
            role += ["--ledger", f"sqlite:///{ledger}"]
        if self.upstream is not None:
            role += ["--upstream", self.upstream]
        process, port = self.spawn(role, self.server_cpu)
        url = f"http://127.0.0.1:{port}/"
        try:
            warmup = self.replay(url, 0, warm)
            check(warmup, warm, f"{variant} warm-up")
            before, client_before = cpu_seconds(process.pid), children_cpu_seconds()
            timed = self.replay(url, warm, count)
            used = cpu_seconds(process.pid) - before
            client = children_cpu_seconds() - client_before
            check(timed, count, variant)
        finally:
            stop(process)  # a metered server flushes its ledger on the way out
            self.processes.remove(process)
        charged = None
        if ledger is not None:
            charged = ledger_calls(ledger)
            if charged != warm + count:
                raise SystemExit(
                    f"{variant}: the ledger holds {charged} records for {warm + count} 200s"
                )
            for path in ledger.parent.glob(ledger.name + "*"):
                path.unlink()
        return Run(
            rps=count / timed.seconds,
            cpu_us=used * 1e6 / count,
            p50_ms=timed.p50_ms,
            busy=used / timed.seconds,
            client_busy=client / timed.seconds,
            charged=charged,
        )

    def close(self) -> None:
        for process in self.processes:
            stop(process)


async def create_ledger(path: Path) -> None:
    from metering_middleware.clock import SystemClock
    from metering_middleware.credentials import CredentialManager, SecretBox
    from metering_middleware.ledger.urls import open_store

    # The bench's throwaway key is stored in plain text on purpose: no warning about it.
    logging.getLogger("metering_middleware").setLevel(logging.ERROR)
    store = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        manager = CredentialManager(store, SecretBox(None), SystemClock())
        await manager.add("acme", SECRET, access_key_id=ACCESS_KEY_ID)
    finally:
        await store.close()


def ledger_calls(path: Path) -> int:
    """Records in the ledger; -1 if any of them is not a 200 (the bench sends only those)."""
    with sqlite3.connect(path) as db:
        query = "SELECT count(*), count(*) FILTER (WHERE status = 200) FROM calls"
        total, ok = db.execute(query).fetchone()
    return int(total) if total == ok else -1


def check(replay: Replay, count: int, what: str) -> None:
    if replay.sent != count or replay.ok != count:
        raise SystemExit(
            f"{what}: {replay.ok} of {count} answered 200 (sent {replay.sent}); "
            f"other statuses: {replay.statuses or '-'}"
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    # uvicorn binds only after the lifespan startup (the ledger opened): listening means ready.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server on port {port} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"server on port {port} did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def children_cpu_seconds() -> float:
    """CPU of the finished children: across one load run, the load generator's alone
    (servers and the mock are still running, so not yet counted)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        # After the parenthesised command name; utime and stime are fields 14 and 15.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the bench -----------------------------------------------------------------------------


def bare_of(variant: str) -> str:
    return "trivial" if variant.startswith(("trivial", "diy")) else "proxy"


def calibrate(bench: Bench, variants: list[str], args: argparse.Namespace) -> dict[str, int]:
    """Each variant's request count a run: about ``args.seconds`` of its own throughput."""
    counts: dict[str, int] = {}
    for variant in variants:
        warm, count = CALIBRATION
        rps = bench.run(variant, warm, count, "calibration").rps
        counts[variant] = max(MIN_COUNT, round(rps * args.seconds))
    print("requests per run: " + ", ".join(f"{v} {n}" for v, n in counts.items()))
    return counts


def one_round(
    bench: Bench,
    variants: list[str],
    counts: dict[str, int],
    n: int,
    args: argparse.Namespace,
    *,
    min_warm: int = CALIBRATION[0],
) -> dict[str, Run]:
    """Round ``n`` (from 0): every variant once, in an order rotated by ``n``."""
    shift = n % len(variants)
    runs: dict[str, Run] = {}
    for variant in variants[shift:] + variants[:shift]:
        count = counts[variant]
        warm = max(min_warm, round(count * args.warmup))
        run = runs[variant] = bench.run(variant, warm, count, f"r{n}")
        charged = f"  ledger={run.charged}" if run.charged is not None else ""
        print(
            f"round {n + 1} {variant:16s} {run.rps:8.0f} req/s "
            f"{run.cpu_us:7.1f} us CPU/req  busy {run.busy:4.0%} "
            f"(client {run.client_busy:4.0%})  "
            f"p50 {run.p50_ms:6.2f} ms{charged}",
            flush=True,
        )
    return runs


def interleave(bench: Bench, variants: list[str], args: argparse.Namespace) -> dict[str, list[Run]]:
    counts = calibrate(bench, variants, args)
    runs: dict[str, list[Run]] = {v: [] for v in variants}
    for n in range(args.rounds):
        for variant, run in one_round(bench, variants, counts, n, args).items():
            runs[variant].append(run)
    return runs


def orchestrate(args: argparse.Namespace) -> None:
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    began = time.monotonic()
    print(machine_line(args), flush=True)
    with tempfile.TemporaryDirectory(prefix="meter-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        if bench.other_cpu is not None:
            os.sched_setaffinity(0, {bench.other_cpu})  # keep the orchestrator off the server's CPU
        try:
            if any(bare_of(v) == "proxy" for v in variants):
                bench.start_mock()
            runs = interleave(bench, variants, args)
        finally:
            bench.close()
    print(f"\n{report(runs)}")
    print(f"\nwall time {time.monotonic() - began:.0f} s; load average {load_average()}")


def machine_line(args: argparse.Namespace) -> str:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; code {code_version()}; "
        f"nproc {os.cpu_count()} ({model}); "
        f"Python {platform.python_version()}; client {args.client}, c={args.concurrency}; "
        f"{args.rounds} rounds, ~{args.seconds:g} s per run; load average {load_average()}"
    )


def code_version() -> str:
    """The commit measured, and whether the library had uncommitted changes."""
    root = HERE.parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "metering_middleware", "example_gateway"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head or 'unknown'}{' + uncommitted library changes' if dirty else ''}"


def load_average() -> str:
    # The machine is shared: a high load average means other work competed for the CPUs.
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _spread(values: list[float], fmt: str) -> str:
    return f"{format(min(values), fmt)}-{format(max(values), fmt)}"


def report(runs: dict[str, list[Run]]) -> str:
    """Markdown: medians with min-max, and each metered variant against its bare one.

    The comparisons are medians of per-round pairs (a metered run against the bare run of
    the same round, minutes apart at most), so a slow spell of the shared machine that
    hits a whole round cancels out instead of widening the spread.
    """
    lines = [
        "| variant | req/s (median) | req/s min-max | CPU µs/req (median) | CPU min-max "
        "| server busy | client busy | req/s vs bare | CPU vs bare | meter's CPU µs/req |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for variant, rs in runs.items():
        rps = statistics.median(r.rps for r in rs)
        cpu = statistics.median(r.cpu_us for r in rs)
        ratio = ratio_cpu = added = "-"
        bare = runs.get(bare_of(variant))
        if is_metered(variant) and bare is not None:
            pairs = list(zip(rs, bare, strict=True))
            ratio = f"{statistics.median(m.rps / b.rps for m, b in pairs):.2f}"
            ratio_cpu = f"{statistics.median(m.cpu_us / b.cpu_us for m, b in pairs):.2f}"
            added = f"+{statistics.median(m.cpu_us - b.cpu_us for m, b in pairs):.0f}"
        lines.append(
            f"| {variant} | {rps:,.0f} | {_spread([r.rps for r in rs], ',.0f')} | {cpu:.0f} "
            f"| {_spread([r.cpu_us for r in rs], '.0f')} "
            f"| {statistics.median(r.busy for r in rs):.0%} "
            f"| {statistics.median(r.client_busy for r in rs):.0%} "
            f"| {ratio} | {ratio_cpu} | {added} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=3.0, help="about this long per run")
    parser.add_argument(
        "--warmup", type=float, default=0.2, help="warm-up requests, as a share of a run"
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--variants", default=",".join(METER_VARIANTS))
    parser.add_argument("--client", choices=["wrk", "aiohttp"], default=None)
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    # The processes the bench starts itself:
    parser.add_argument("--role", choices=["orchestrate", "serve", "load"], default="orchestrate")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ledger", help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--pool", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "serve":
        from apps import build_app, serve

        serve(build_app(args.variant, ledger_url=args.ledger, upstream=args.upstream), args.port)
    elif args.role == "load":
        from loadgen import load_main

        load_main(args.url, args.pool, args.size, args.first, args.count, args.concurrency)
    else:
        args.client = args.client or ("wrk" if shutil.which("wrk") else "aiohttp")
        orchestrate(args)


if __name__ == "__main__":
    main()
