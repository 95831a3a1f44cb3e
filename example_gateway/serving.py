"""Run an ASGI app under uvicorn inside the current event loop (demo, tests, benchmarks).

    async with run_server(app) as base_url:
        ...  # http://127.0.0.1:<port>

Entering waits until the socket listens and the app's lifespan startup is
done (a failed startup raises ``RuntimeError``, never ``SystemExit``); leaving
shuts down within uvicorn's 0.1 s tick; pytest's signal handlers are left alone
(the one override of uvicorn left, see ``_Server``; docs/logging.md says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import socket
from collections.abc import AsyncIterator, Generator
from typing import Any

import uvicorn
import uvicorn.config
from starlette.types import ASGIApp

__all__ = ["free_port", "gateway_log_config", "run_server"]


class _Server(uvicorn.Server):
    """uvicorn's ``Server``, without its signal handlers: the one override left.

    uvicorn has no public switch for them (``Config`` has none; ``serve`` always
    enters ``capture_signals``), and in the main thread it swaps SIGINT/SIGTERM
    for its own on entry and puts back what it found on exit. Tests run several
    servers at once in one loop (a mock upstream and a gateway): servers that
    stop in another order than they started put back each other's stale
    handlers, so a later Ctrl-C would set ``should_exit`` of a server long gone
    instead of stopping pytest. Everything else uses uvicorn's public API: a
    socket bound by ``Config.bind_socket`` and given to ``serve``, the
    ``callback_notify`` heartbeat as the "running" signal, ``should_exit``.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def _serve(server: _Server, sock: socket.socket) -> None:
    try:
        await server.serve(sockets=[sock])
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
    running = asyncio.Event()

    async def notify() -> None:
        # uvicorn's heartbeat (``Config.callback_notify``, for process managers) runs
        # first on the main loop's first tick, i.e. right after startup: our signal.
        running.set()

    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "lifespan": "on",
        "log_level": "warning",
        "timeout_graceful_shutdown": graceful_shutdown,
        "callback_notify": notify,
    }
    options.update(config)
    uv_config = uvicorn.Config(app, **options)
    try:
        sock = uv_config.bind_socket()  # bound here: its port is known before serving
    except SystemExit as exc:
        raise RuntimeError(f"uvicorn could not bind (exit status {exc.code})") from None
    server = _Server(uv_config)
    task = asyncio.create_task(_serve(server, sock))
    started = asyncio.create_task(running.wait())
    try:
        await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        sock.close()
        raise
    finally:
        started.cancel()
    if not server.started:
        sock.close()
        await task  # raises why it could not start
        raise RuntimeError("uvicorn stopped before it started")
    host, port = sock.getsockname()[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        # uvicorn looks at should_exit every 0.1 s: leaving takes up to that long.
        server.should_exit = True
        await task


def gateway_log_config(log_format: str) -> dict[str, Any]:
    """uvicorn's ``log_config`` for the gateway: uvicorn's own, plus the meter's lines.

    uvicorn's loggers, handlers and levels stay as uvicorn ships them; the
    ``metering_middleware`` loggers log at INFO (one line per refused call,
    settlement pass, notice, store failure). ``json``: uvicorn's formatters and
    the root logger's (the gateway's own lines) become the meter's
    ``JsonFormatter``, so every line on stderr and stdout is one JSON object;
    the meter's own lines get theirs from the runtime (``log_format``).
    """
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["loggers"]["metering_middleware"] = {"level": "INFO"}
    if log_format == "json":
        json_formatter = {"()": "metering_middleware.logs.JsonFormatter"}
        config["formatters"] = {"default": json_formatter, "access": dict(json_formatter)}
        config["root"] = {"handlers": ["default"], "level": "WARNING"}
    return config


def free_port() -> int:
    """A port nothing listens on (for "upstream is down" tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
