"""``metering-gateway``: run the example gateway, or the self-contained demo.

The help and descriptions are plain text constants below (not this
docstring, whose markup argparse would print as is).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.config
import sys
from collections.abc import Sequence
from pathlib import Path

from metering_middleware import CatalogError, ConfigError, MeteringRuntime, StoreError
from metering_middleware._cli_args import Parser, add_command, add_commands, package_version
from metering_middleware.limiter import LimiterError

__all__ = ["build_parser", "main"]


async def _start_and_stop(runtime: MeteringRuntime) -> None:
    async with runtime:
        pass


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_gateway_app
    from .config import load_config
    from .serving import gateway_log_config

    try:
        gateway, metering = load_config(args.config)
        log_config = gateway_log_config(metering.log_format)
        logging.config.dictConfig(log_config)  # the first start's lines already in the format
        # Started and stopped once before serving: a ledger, journal or Redis that
        # cannot start is one line here, not a traceback from the server's lifespan.
        asyncio.run(_start_and_stop(MeteringRuntime(metering)))
        runtime = MeteringRuntime(metering)
        # Inside: a part that refuses this ledger (the admin API on PostgreSQL) is one line.
        app = create_gateway_app(gateway, runtime)
    except ConfigError as exc:  # a bad setting is bad usage: nothing was started
        print(f"metering-gateway: {exc}", file=sys.stderr)
        return 2
    # LimiterError: a second process on a memory:// limiter's ledger, or a bad budget.
    except (CatalogError, StoreError, LimiterError, OSError, ValueError) as exc:
        print(f"metering-gateway: {exc}", file=sys.stderr)
        return 1
    uvicorn.run(
        app,
        host=gateway.host,
        port=gateway.port,
        lifespan="on",
        timeout_graceful_shutdown=int(gateway.drain_seconds),
        log_level="info",
        log_config=log_config,
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


DESCRIPTION = "Run the example metering gateway, the mock VIAPI upstream, or a demo of both."
EPILOG = """\
examples:
  metering-gateway demo                 mock VIAPI + gateway + SDK traffic + summary
  metering-gateway serve --config F     the gateway, configured by file and environment
  metering-gateway mock --port 9000     the mock VIAPI alone

Exit status: 0 success, 1 failure (a ledger, journal or Redis that cannot start),
2 bad usage (including a bad setting in the file or the environment).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="metering-gateway", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument(
        "--version",
        action="version",
        version=f"metering-gateway {package_version('metering_middleware')}",
        help="print the version and exit",
    )
    commands = add_commands(parser, "command")
    demo = add_command(commands, "demo", "run the self-contained demo and print a summary")
    demo.add_argument(
        "--db", metavar="FILE", help="ledger file to write (default: a new temporary file)"
    )
    demo.set_defaults(run=_demo)
    serve = add_command(commands, "serve", "run the gateway")
    serve.add_argument(
        "--config",
        metavar="FILE",
        help="TOML configuration file; GATEWAY_* and METERING_* variables override it",
    )
    serve.set_defaults(run=_serve)
    mock = add_command(commands, "mock", "run the mock VIAPI upstream")
    mock.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    mock.add_argument("--port", type=int, default=9000, help="port to listen on (default: 9000)")
    mock.set_defaults(run=_mock)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # asked for nothing: the help, on stderr, as bad usage
        args.help_of.print_help(sys.stderr)
        return 2
    result: int = args.run(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
