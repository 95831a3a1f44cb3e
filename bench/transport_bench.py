"""Proxy throughput and CPU per request: aiohttp-backed vs plain httpx transport.

    .venv/bin/python bench/transport_bench.py               # 5 rounds x 5 s per transport
    .venv/bin/python bench/transport_bench.py --rounds 7 --seconds 5 --targets direct,aiohttp,httpx

Three kinds of process, as in production: a trivial upstream (raw ASGI, fixed
JSON answer), one proxy per transport (``create_proxy_app`` under uvicorn,
uvloop + httptools when installed), and a load generator (aiohttp, N
concurrent keep-alive connections) started afresh for every measurement.
Rounds interleave the transports (order alternating) so drift on a shared
machine hits both alike. With two or more CPUs the proxies run on CPU 0 and
everything else on CPU 1 (the proxy alone on its core, as in the performance
notes). CPU per request is the proxy process's utime + stime from
``/proc/<pid>/stat`` over the measurement, divided by the requests served.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, Literal

UPSTREAM_BODY = json.dumps(
    {"RequestId": "5B3E-BENCH", "Data": {"FaceCount": 1, "FaceRectangles": [120, 80, 200, 240]}}
).encode()
PATH = "/?Action=DetectFace&Version=2019-12-30&ImageURL=http%3A%2F%2Fimg%2Fface.jpg"


# --- roles (each runs in its own process) ----------------------------------------------------


async def upstream_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    headers = [
        (b"content-type", b"application/json;charset=utf-8"),
        (b"content-length", b"%d" % len(UPSTREAM_BODY)),
        (b"x-acs-request-id", b"5B3E-BENCH"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": UPSTREAM_BODY})


def serve(app: Any, port: int, lifespan: Literal["on", "off"]) -> None:
    import uvicorn

    uvicorn.run(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan=lifespan
    )


async def load(url: str, seconds: float, concurrency: int) -> dict[str, float]:
    import aiohttp

    ok = errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal ok, errors
            while time.perf_counter() < deadline:
                try:
                    async with session.get(url) as response:
                        await response.read()
                        if response.status == 200:
                            ok += 1
                        else:
                            errors += 1
                except aiohttp.ClientError:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {"ok": ok, "errors": errors, "elapsed": elapsed}


# --- orchestration ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def pinned(cpu: int | None) -> Callable[[], None] | None:
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def spawn(args: list[str], cpu: int | None) -> subprocess.Popen[bytes]:
    command = [sys.executable, os.path.abspath(__file__), *args]
    return subprocess.Popen(command, preexec_fn=pinned(cpu))


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
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


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        # Fields after the parenthesised command name; utime and stime are 14th and 15th.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    url: str, pid: int | None, args: argparse.Namespace, cpu: int | None
) -> dict[str, float]:
    before = cpu_seconds(pid) if pid else 0.0
    command = [sys.executable, os.path.abspath(__file__), "--role", "load", "--url", url]
    command += ["--seconds", str(args.seconds), "--concurrency", str(args.concurrency)]
    out = subprocess.run(command, check=True, capture_output=True, preexec_fn=pinned(cpu)).stdout
    result: dict[str, float] = json.loads(out)
    used = (cpu_seconds(pid) if pid else 0.0) - before
    result["rps"] = result["ok"] / result["elapsed"]
    result["cpu_us"] = used * 1e6 / max(result["ok"], 1)
    return result


def main_orchestrate(args: argparse.Namespace) -> None:
    targets = args.targets.split(",")
    proxy_cpu, other_cpu = (
        (0, 1) if (os.cpu_count() or 1) >= 2 and not args.no_pin else (None, None)
    )
    processes: list[subprocess.Popen[bytes]] = []
    try:
        up_port = free_port()
        upstream = spawn(["--role", "upstream", "--port", str(up_port)], other_cpu)
        processes.append(upstream)
        wait_listening(up_port, upstream)
        upstream_url = f"http://127.0.0.1:{up_port}"
        servers: dict[str, tuple[str, int | None]] = {"direct": (upstream_url + PATH, None)}
        for kind in targets:
            if kind == "direct":
                continue
            port = free_port()
            proxy = spawn(
                ["--role", "proxy", "--port", str(port), "--transport", kind,
                 "--upstream", upstream_url, "--max-connections", str(args.max_connections)],
                proxy_cpu,
            )  # fmt: skip
            processes.append(proxy)
            wait_listening(port, proxy)
            servers[kind] = (f"http://127.0.0.1:{port}{PATH}", proxy.pid)

        warm = argparse.Namespace(**{**vars(args), "seconds": 1.0})
        for kind in targets:
            measure(servers[kind][0], servers[kind][1], warm, other_cpu)

        results: dict[str, list[dict[str, float]]] = {kind: [] for kind in targets}
        for n in range(args.rounds):
            order = targets if n % 2 == 0 else targets[::-1]
            for kind in order:
                r = measure(servers[kind][0], servers[kind][1], args, other_cpu)
                results[kind].append(r)
                print(
                    f"round {n + 1} {kind:8s} {r['rps']:8.0f} req/s  "
                    f"{r['cpu_us']:7.0f} us CPU/req  errors={int(r['errors'])}",
                    flush=True,
                )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)

    print(f"\nmedians over {args.rounds} rounds, c={args.concurrency}, {args.seconds:g} s each:")
    medians = {}
    for kind in targets:
        rps = statistics.median(r["rps"] for r in results[kind])
        cpu = statistics.median(r["cpu_us"] for r in results[kind])
        medians[kind] = (rps, cpu)
        cpu_text = f"{cpu:7.0f} us CPU/req" if kind != "direct" else "      (upstream only)"
        print(f"  {kind:8s} {rps:8.0f} req/s  {cpu_text}")
    if "aiohttp" in medians and "httpx" in medians:
        (a_rps, a_cpu), (h_rps, h_cpu) = medians["aiohttp"], medians["httpx"]
        print(f"  aiohttp/httpx: {a_rps / h_rps:.2f}x req/s, {h_cpu / a_cpu:.2f}x less CPU/req")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--role", choices=["orchestrate", "upstream", "proxy", "load"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-connections", type=int, default=64)
    parser.add_argument("--targets", default="aiohttp,httpx")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--port", type=int)
    parser.add_argument("--transport")
    parser.add_argument("--upstream")
    parser.add_argument("--url")
    args = parser.parse_args()
    role = args.role or "orchestrate"
    if role == "upstream":
        serve(upstream_app, args.port, "off")
    elif role == "proxy":
        from apps import premetered

        from example_gateway.proxy import create_proxy_app

        app = premetered(
            create_proxy_app(
                args.upstream, transport=args.transport, max_connections=args.max_connections
            )
        )
        serve(app, args.port, "on")
    elif role == "load":
        print(json.dumps(asyncio.run(load(args.url, args.seconds, args.concurrency))))
    else:
        main_orchestrate(args)


if __name__ == "__main__":
    main()
