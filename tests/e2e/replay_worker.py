"""One example-gateway process for the replay tests: ``python replay_worker.py '<json>'``.

The real example gateway (signature checks, limiter, ledger) under uvicorn on the given
port; the JSON names the ledger URL, the upstream, the port and any ``MeteringConfig``
settings (``"settings"``). The tests kill it with SIGKILL: nothing here runs on exit.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import uvicorn

from example_gateway.app import create_gateway_app
from example_gateway.config import GatewayConfig
from metering_middleware import MeteringConfig, MeteringRuntime
from tests.support.catalogs import roomy_catalog


def main() -> None:
    cfg: dict[str, Any] = json.loads(sys.argv[1])
    config = MeteringConfig(ledger_url=cfg["ledger"], **cfg.get("settings", {}))
    runtime = MeteringRuntime(config, catalog=roomy_catalog())
    app = create_gateway_app(GatewayConfig(upstream=cfg["upstream"]), runtime)
    uvicorn.run(app, host="127.0.0.1", port=cfg["port"], log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
