"""Run an ASGI app under uvicorn inside the current event loop (demo, tests, benchmarks)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn
from starlette.types import ASGIApp

__all__ = ["serve_in_background"]


@contextlib.asynccontextmanager
async def serve_in_background(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    drain_seconds: float = 5.0,
    **uvicorn_options: object,
) -> AsyncIterator[str]:
    """Serve ``app`` until the block ends; yields its base URL (port 0: a free one).

    Leaving the block shuts uvicorn down gracefully: in-flight requests get
    ``drain_seconds``, then the lifespan shutdown runs (the meter flushes).
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_level="warning",
        timeout_graceful_shutdown=int(max(1, drain_seconds)),
        **uvicorn_options,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                await task  # re-raise why it could not start
                raise RuntimeError("server stopped before it started")
            await asyncio.sleep(0.01)
        sockname = server.servers[0].sockets[0].getsockname()
        yield f"http://{sockname[0]}:{sockname[1]}"
    finally:
        server.should_exit = True
        await task
