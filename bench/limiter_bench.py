"""QPS limiter cost: microseconds per admission in-process and with Redis, and Redis
round trips per admission (from the server's own ``INFO commandstats``).

    .venv/bin/python bench/limiter_bench.py                # starts a redis-server from PATH
    .venv/bin/python bench/limiter_bench.py --redis-url redis://127.0.0.1:6379/0
    .venv/bin/python bench/limiter_bench.py --append bench/RESULTS.md

Each figure is the median of ``--rounds`` interleaved rounds. Prints a Markdown section.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import redis.asyncio as aioredis

from metering_middleware.clock import SystemClock
from metering_middleware.limiter import MemoryLimiter, NonceClaim
from metering_middleware.limiter.redis import RedisLimiter

# Commands the admission script runs inside Redis: counted by commandstats, not round trips.
_INSIDE_SCRIPT = {"time", "get", "set", "lrange", "ltrim", "del", "lpush", "pexpire"}


@contextlib.contextmanager
def _redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH (or pass --redis-url)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as directory:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", directory]
        args += ["--save", "", "--appendonly", "no"]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        try:
            for _ in range(500):
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                time.sleep(0.01)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.kill()
            proc.wait()


async def _per_call_us(call: Callable[[int], Awaitable[Any]], n: int) -> tuple[float, float]:
    """(wall µs, this process's CPU µs) per call, ``n`` calls one after another."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        await call(i)
    return (
        (time.perf_counter() - wall) / n * 1e6,
        (time.process_time() - cpu) / n * 1e6,
    )


async def _concurrent(call: Callable[[int], Awaitable[Any]], n: int, clients: int) -> float:
    """Admissions a second with ``clients`` concurrent callers."""
    per = n // clients

    async def client(c: int) -> None:
        for i in range(per):
            await call(c * per + i)

    start = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    return per * clients / (time.perf_counter() - start)


async def _round_trips(client: aioredis.Redis, limiter: RedisLimiter, n: int) -> float:
    await client.config_resetstat()
    for i in range(n):
        claim = NonceClaim("LTAIbench", f"rt-{i}-{time.time_ns()}", time.time() + 900)
        await limiter.admit(f"rt-{i % 10}", "facebody", "DetectFace", 50, nonce=claim)
    info = await client.info("commandstats")
    calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}
    trips = sum(v for k, v in calls.items() if k not in _INSIDE_SCRIPT and k != "config|resetstat")
    return trips / n


async def run(url: str, rounds: int, n_mem: int, n_redis: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        results.setdefault(name, []).append(value)

    clock = SystemClock()
    memory = MemoryLimiter(clock)
    shared = RedisLimiter(url, clock, key_prefix="bench:", socket_timeout=5.0)
    await shared.start()
    stats = aioredis.Redis.from_url(url)
    nonce_seq = [0]

    def mem_admit(i: int) -> Awaitable[Any]:
        return memory.admit(f"acct-{i % 5000}", "facebody", "DetectFace", 100)

    def mem_throttled(i: int) -> Awaitable[Any]:
        return memory.admit("hot", "facebody", "DetectFace", 5)

    def mem_nonce(i: int) -> Awaitable[Any]:
        nonce_seq[0] += 1
        claim = NonceClaim("LTAIbench", f"m{nonce_seq[0]}", clock.time() + 900)
        return memory.admit(f"acct-{i % 5000}", "facebody", "DetectFace", 100, nonce=claim)

    def redis_admit(i: int) -> Awaitable[Any]:
        return shared.admit(f"acct-{i % 5000}", "facebody", "DetectFace", 100)

    # Baselines measured in the same rounds, so the figures survive a noisy machine:
    # an awaited dict increment (the least an in-process check can cost) and a bare
    # PING on the same kind of connection (the least one Redis round trip can cost).
    counts: dict[str, int] = {}

    async def dict_increment(i: int) -> None:
        key = f"acct-{i % 5000}"
        counts[key] = counts.get(key, 0) + 1

    ping_client = aioredis.Redis.from_url(url, socket_timeout=5.0)

    def redis_ping(i: int) -> Awaitable[Any]:
        return ping_client.ping()

    def redis_nonce(i: int) -> Awaitable[Any]:
        nonce_seq[0] += 1
        claim = NonceClaim("LTAIbench", f"r{nonce_seq[0]}", clock.time() + 900)
        return shared.admit(f"acct-{i % 5000}", "facebody", "DetectFace", 100, nonce=claim)

    try:
        await _per_call_us(redis_admit, 2000)  # warm-up: connections, script cache
        await _per_call_us(redis_ping, 500)
        for _ in range(rounds):
            add("baseline: awaited dict increment", (await _per_call_us(dict_increment, n_mem))[0])
            wall, cpu = await _per_call_us(redis_ping, n_redis)
            add("baseline: redis PING (wall)", wall)
            add("baseline: redis PING (gateway CPU)", cpu)
            add("memory admitted", (await _per_call_us(mem_admit, n_mem))[0])
            add("memory throttled", (await _per_call_us(mem_throttled, n_mem))[0])
            add("memory + nonce", (await _per_call_us(mem_nonce, n_mem))[0])
            wall, cpu = await _per_call_us(redis_admit, n_redis)
            add("redis admitted (wall)", wall)
            add("redis admitted (gateway CPU)", cpu)
            wall, cpu = await _per_call_us(redis_nonce, n_redis)
            add("redis + nonce (wall)", wall)
            add("redis + nonce (gateway CPU)", cpu)
            add("redis, 32 concurrent (admissions/s)", await _concurrent(redis_admit, n_redis, 32))
            add("redis round trips per admission", await _round_trips(stats, shared, 500))
    finally:
        await shared.close()
        await stats.aclose()
        await ping_client.aclose()
    return results


def _markdown(results: dict[str, list[float]], rounds: int, version: str) -> str:
    lines = [
        "## Limiter",
        "",
        f"`bench/limiter_bench.py`, median of {rounds} interleaved rounds, one process, "
        f"redis-server {version} on the same 2-core machine (loopback).",
        "",
        "| measure | value | vs baseline (same rounds) |",
        "| --- | --- | --- |",
    ]
    baselines = {
        "memory": "baseline: awaited dict increment",
        "(wall)": "baseline: redis PING (wall)",
        "(gateway CPU)": "baseline: redis PING (gateway CPU)",
    }
    for name, values in results.items():
        med = statistics.median(values)
        unit = "" if "/s" in name or "round trips" in name else " µs"
        shown = f"{med:,.0f}" if "/s" in name else f"{med:.2f}" if med < 10 else f"{med:.1f}"
        ratio = ""
        if not name.startswith("baseline"):
            for marker, base in baselines.items():
                if marker in name and base in results:
                    # Median of the per-round ratios: each admission against its own round.
                    pairs = zip(values, results[base], strict=True)
                    ratio = f"{statistics.median(v / b for v, b in pairs):.1f}x"
                    break
        lines.append(f"| {name} | {shown}{unit} | {ratio} |")
    lines += [
        "",
        "- In-process: one exact sliding log (deque) per (account, API); `memory + nonce` adds "
        "the in-process nonce claim.",
        "- Redis: one `EVALSHA` per admission claims the nonce and checks the log; round trips "
        "are counted by the server (`INFO commandstats` deltas, commands run inside the script "
        "excluded). Wall time is the loopback round trip; gateway CPU is this process's share.",
        "",
    ]
    return "\n".join(lines)


async def _version(url: str) -> str:
    client = aioredis.Redis.from_url(url)
    try:
        return str((await client.info("server"))["redis_version"])
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", help="an existing Redis (else one is started)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--memory-calls", type=int, default=100_000)
    parser.add_argument("--redis-calls", type=int, default=5_000)
    parser.add_argument("--append", help="append the Markdown section to this file")
    args = parser.parse_args()

    def go(url: str) -> str:
        results = asyncio.run(run(url, args.rounds, args.memory_calls, args.redis_calls))
        return _markdown(results, args.rounds, asyncio.run(_version(url)))

    if args.redis_url:
        text = go(args.redis_url)
    else:
        with _redis_server() as url:
            text = go(url)
    print(text)
    if args.append:
        with open(args.append, "a", encoding="utf-8") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
