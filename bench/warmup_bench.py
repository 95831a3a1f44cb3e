"""The first calls after a start, with and without the upstream pool's warm-up.

    .venv/bin/python bench/warmup_bench.py              # ~20 s
    .venv/bin/python bench/warmup_bench.py --rounds 9 --transport httpx

The example proxy (``create_proxy_app``, the transport the gateway ships) is started
under uvicorn in front of the mock VIAPI, alternately with ``warm_connections=0`` and
``4``, and the first call after each start is timed (wall clock, from the caller's
side), then the median of the next 20 calls (the steady state) in the same start.
Both variants alternate within one run, so they share the machine's load. The
meter is not mounted: its ``MeteredCall`` is put in the scope the way the meter does,
so the figure is the proxy's connection set-up alone.

On this machine the upstream is on localhost, so a cold first call pays only the
transport's lazy set-up and a local TCP connect; facing the real VIAPI it adds DNS,
a TCP round trip to the region and the TLS handshake (the 100-500 ms seen), which the
warm-up moves out of the first calls into the start.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from example_gateway.mock_upstream import create_mock_upstream
from example_gateway.proxy import create_proxy_app
from example_gateway.serving import run_server
from metering_middleware.context import STATE_KEY, MeteredCall

HEADERS = {"x-acs-action": "DetectFace", "x-acs-version": "2019-12-30"}


def _metered(app: ASGIApp) -> ASGIApp:
    call = MeteredCall(
        "bench", "bench-key", "facebody", "DetectFace", "2019-12-30", "r", "v3", (), False, ()
    )

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, "state": {**(scope.get("state") or {}), STATE_KEY: call}}
        await app(scope, receive, send)

    return wrapped


async def _one_start(upstream: str, warm: int, transport: str) -> tuple[float, float, float]:
    app = _metered(create_proxy_app(upstream, warm_connections=warm, transport=transport))  # type: ignore[arg-type]
    began = time.perf_counter()
    async with run_server(app) as proxy, httpx.AsyncClient(base_url=proxy) as client:
        started = time.perf_counter() - began
        t = time.perf_counter()
        first = await client.get("/", headers=HEADERS)
        first_ms = (time.perf_counter() - t) * 1000
        assert first.status_code == 200, first.status_code
        rest = []
        for _ in range(20):
            t = time.perf_counter()
            await client.get("/", headers=HEADERS)
            rest.append((time.perf_counter() - t) * 1000)
    return started * 1000, first_ms, statistics.median(rest)


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


async def main(rounds: int, transport: str) -> None:
    mock = create_mock_upstream()
    results: dict[int, list[tuple[float, float, float]]] = {0: [], 4: []}
    async with run_server(mock) as upstream:
        for n in range(rounds):
            for warm in (0, 4) if n % 2 == 0 else (4, 0):
                results[warm].append(await _one_start(upstream, warm, transport))
    cold_first = [r[1] for r in results[0]]
    print(f"`bench/warmup_bench.py --rounds {rounds} --transport {transport}`, one run.\n")
    print("| measure (ms, wall) | warm_connections=0 | warm_connections=4 | 4 vs 0 |")
    print("| --- | --- | --- | --- |")
    rows = (("start (lifespan until listening)", 0), ("first call", 1), ("steady call", 2))
    for label, i in rows:
        off = [r[i] for r in results[0]]
        on = [r[i] for r in results[4]]
        ratio = statistics.median(on) / statistics.median(off)
        print(f"| {label} | {_spread(off)} | {_spread(on)} | {ratio:.2f}x |")
    steady = statistics.median([r[2] for r in results[0]])
    print(f"\ncold first call / steady call: {statistics.median(cold_first) / steady:.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--transport", choices=("aiohttp", "httpx"), default="aiohttp")
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.transport))
