"""Pre-signed VIAPI requests and the two ways ``meter_bench.py`` fires them.

Every metered call needs a valid V3 signature with a nonce never seen before,
so requests are signed *before* the timed window (signing costs ~20 µs here, as
much as the whole bare app) and written to a pool file as raw HTTP/1.1
requests. They all have the same length (fixed-width date, nonce, signature),
so a load generator slices record ``i`` out of the file without parsing.

A pool is reused by every server process: nonces are remembered per process
and each run starts a fresh server, while a run never sends a record twice
(warm-up and timed window take disjoint slices). The ledger's credentials are
made with the same fixed AccessKey, so the same pool is valid for every ledger.

- ``wrk`` (``replay.lua``): C, one thread, keep-alive; far faster than the
  servers under test, so the server is the bottleneck even for the bare app.
- ``aiohttp``: a fallback for machines without wrk; on one core it tops out
  below the bare trivial app, so its req/s there measure the client, not the
  server (CPU per request stays valid).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from metering_middleware.signing import sign_v3

__all__ = [
    "ACCESS_KEY_ID",
    "BODY",
    "SECRET",
    "Replay",
    "RequestPool",
    "replay_aiohttp",
    "replay_wrk",
]

ACCESS_KEY_ID: Final = "LTAI" + "bench" + "0" * 14 + "1"  # LTAI + 20, like a real one
SECRET: Final = "benchSecret0000000000000000000"
HOST: Final = "facebody.cn-shanghai.aliyuncs.com"
BODY: Final = b"ImageURL=https%3A%2F%2Fviapi-test.oss-cn-shanghai.aliyuncs.com%2Fbench%2Fface.jpg"
LUA_SCRIPT: Final = Path(__file__).with_name("replay.lua")
#: Signatures are accepted for 15 minutes; a pool older than this is signed afresh.
MAX_POOL_AGE: Final = 600.0


def signed_request(now: datetime, nonce: str) -> bytes:
    headers = {
        "host": HOST,
        "x-acs-action": "DetectFace",
        "x-acs-version": "2019-12-30",
        "content-type": "application/x-www-form-urlencoded",
    }
    headers.update(
        sign_v3("POST", "/", [], headers, BODY, ACCESS_KEY_ID, SECRET, now=now, nonce=nonce)
    )
    lines = ["POST / HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    lines.append(f"content-length: {len(BODY)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + BODY


class RequestPool:
    """A file of fixed-size signed requests, grown on demand and re-signed when old."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = len(signed_request(datetime.now(UTC), uuid.uuid4().hex))
        self.count = 0
        self.signed_at = 0.0

    @classmethod
    def existing(cls, path: Path, size: int) -> RequestPool:
        """A pool another process wrote (records are only read from it)."""
        pool = cls.__new__(cls)
        pool.path, pool.size, pool.count, pool.signed_at = path, size, 0, 0.0
        return pool

    def ensure(self, count: int) -> None:
        """At least ``count`` records, all young enough to stay valid for a while."""
        if time.monotonic() - self.signed_at > MAX_POOL_AGE:
            self.count = 0
        if count <= self.count:
            return
        now = datetime.now(UTC)
        with open(self.path, "ab" if self.count else "wb") as out:
            for _ in range(count - self.count):
                raw = signed_request(now, uuid.uuid4().hex)
                if len(raw) != self.size:
                    raise RuntimeError("signed requests differ in length; the pool needs one")
                out.write(raw)
        if not self.count:
            self.signed_at = time.monotonic()
        self.count = count

    def records(self, first: int, count: int) -> list[tuple[dict[str, str], bytes]]:
        """(headers, body) of records ``first`` .. ``first + count - 1``, for HTTP clients."""
        out = []
        with open(self.path, "rb") as f:
            f.seek(first * self.size)
            for _ in range(count):
                head, body = f.read(self.size).split(b"\r\n\r\n", 1)
                lines = head.decode().split("\r\n")[1:]
                headers = dict(line.split(": ", 1) for line in lines)
                del headers["content-length"]  # the client sets it
                out.append((headers, body))
        return out


@dataclass(frozen=True, slots=True)
class Replay:
    """What a load generator saw: every response's status, counted."""

    sent: int
    ok: int
    bad: int
    seconds: float
    statuses: str  # the first few non-200 statuses
    p50_ms: float
    p99_ms: float


def replay_wrk(
    url: str,
    pool: RequestPool,
    first: int,
    count: int,
    *,
    concurrency: int,
    preexec: Callable[[], None] | None,
    limit_seconds: float = 120.0,
) -> Replay:
    command = [
        "wrk", "-t1", f"-c{concurrency}", f"-d{int(limit_seconds)}s", "--timeout", "30s",
        "-s", str(LUA_SCRIPT), url, "--", str(pool.path), str(pool.size), str(first), str(count),
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, preexec_fn=preexec, timeout=limit_seconds + 30
    )
    for line in done.stdout.splitlines():
        if line.startswith("REPLAY "):
            data: dict[str, Any] = json.loads(line[len("REPLAY ") :])
            errors = data.pop("socket_errors")
            if errors or data["ok"] + data["bad"] != count:
                raise RuntimeError(f"wrk lost requests ({errors} socket errors): {data}")
            return Replay(**data)
    raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")


async def replay_aiohttp(
    url: str, records: list[tuple[dict[str, str], bytes]], concurrency: int
) -> Replay:
    import aiohttp

    pending = iter(records)  # shared by the workers: each record is sent once
    latencies: list[float] = []
    bad: list[int] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    skip = ("User-Agent", "Accept", "Accept-Encoding")
    async with aiohttp.ClientSession(connector=connector, skip_auto_headers=skip) as session:

        async def worker() -> None:
            for headers, body in pending:
                began = time.perf_counter()
                async with session.post(url, headers=headers, data=body) as response:
                    await response.read()
                    if response.status != 200:
                        bad.append(response.status)
                latencies.append(time.perf_counter() - began)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    n = len(latencies)
    return Replay(
        sent=n,
        ok=n - len(bad),
        bad=len(bad),
        seconds=elapsed,
        statuses=" ".join(map(str, bad[:5])),
        p50_ms=latencies[n // 2] * 1000 if n else 0.0,
        p99_ms=latencies[min(n - 1, n * 99 // 100)] * 1000 if n else 0.0,
    )


def load_main(url: str, pool_path: str, size: int, first: int, count: int, c: int) -> None:
    """The ``--role load`` process: parse its slice (untimed), replay it, print JSON."""
    records = RequestPool.existing(Path(pool_path), size).records(first, count)
    result = asyncio.run(replay_aiohttp(url, records, c))
    print(json.dumps(asdict(result)), flush=True)
