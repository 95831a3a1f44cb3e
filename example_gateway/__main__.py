"""``metering-gateway``: run the example gateway, or the self-contained demo.

metering-gateway demo                 # mock VIAPI + gateway + SDK traffic + summary
metering-gateway serve [--config F]   # the gateway, configured by file and environment
metering-gateway mock [--port N]      # the mock VIAPI alone
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from metering_middleware import CatalogError, ConfigError, MeteringRuntime

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_gateway_app
    from .config import load_config

    try:
        gateway, metering = load_config(args.config)
        runtime = MeteringRuntime(metering)
    except (ConfigError, CatalogError, ValueError) as exc:
        print(f"metering-gateway: {exc}", file=sys.stderr)
        return 1
    app = create_gateway_app(gateway, runtime)
    uvicorn.run(
        app,
        host=gateway.host,
        port=gateway.port,
        lifespan="on",
        timeout_graceful_shutdown=int(gateway.drain_seconds),
        log_level="info",
    )
    return 0


def _mock(args: argparse.Namespace) -> int:
    import uvicorn

    from .mock_upstream import create_mock_upstream

    uvicorn.run(create_mock_upstream(), host=args.host, port=args.port, log_level="warning")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return asyncio.run(run_demo(Path(args.db) if args.db else None))


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="metering-gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the self-contained demo and print a summary")
    demo.add_argument("--db", help="ledger file to write (default: a new temporary file)")
    demo.set_defaults(run=_demo)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="TOML configuration file")
    serve.set_defaults(run=_serve)
    mock = commands.add_parser("mock", help="run the mock VIAPI upstream")
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--port", type=int, default=9000)
    mock.set_defaults(run=_mock)
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
