"""Run an ASGI app under uvicorn inside the current event loop (demo, tests, benchmarks).

    async with run_server(app) as base_url:
        ...  # http://127.0.0.1:<port>

Entering waits until the socket listens and the app's lifespan startup is
done (a failed startup raises ``RuntimeError``, never ``SystemExit``); leaving
shuts down at once: no polling tick, pytest's signal handlers left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Generator
from typing import Any

import uvicorn
from starlette.types import ASGIApp

__all__ = ["free_port", "run_server"]


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.startup_done = asyncio.Event()
        self.stop = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn would take over SIGINT/SIGTERM for the whole test session.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.startup_done.set()

    async def main_loop(self) -> None:
        # uvicorn polls should_exit every 0.1 s; wake up as soon as we are told to stop
        # (the 1 s tick keeps the Date header fresh).
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 1.0)


async def _serve(server: _Server) -> None:
    try:
        await server.serve()
    except SystemExit as exc:
        # uvicorn exits the process when startup fails; in a task that would stop the loop.
        raise RuntimeError(f"uvicorn failed to start (exit status {exc.code})") from None


@contextlib.asynccontextmanager
async def run_server(
    app: ASGIApp, *, graceful_shutdown: int = 5, **config: Any
) -> AsyncIterator[str]:
    """Serve ``app`` while the block runs; yields its base URL.

    ``graceful_shutdown`` bounds how long leaving waits for unfinished requests
    before cancelling them; ``config`` goes to ``uvicorn.Config`` as is.
    """
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "lifespan": "on",
        "log_level": "warning",
        "timeout_graceful_shutdown": graceful_shutdown,
    }
    options.update(config)
    server = _Server(uvicorn.Config(app, **options))
    task = asyncio.create_task(_serve(server))
    started = asyncio.create_task(server.startup_done.wait())
    try:
        await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        started.cancel()
    if not server.started:
        await task  # raises why it could not start
        raise RuntimeError("uvicorn stopped before it started")
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        server.stop.set()
        await task


def free_port() -> int:
    """A port nothing listens on (for "upstream is down" tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
