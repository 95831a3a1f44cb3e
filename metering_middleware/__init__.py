"""metering_middleware: metering for gateways in front of Alibaba Cloud VIAPI.

Mount ``MeteringMiddleware`` around any ASGI proxy: it identifies each call,
verifies its signature, watches the upstream's answer and writes every
chargeable call to a durable ledger.
"""

# First: a compiled build older than its sources is not used (docs/performance.md).
from . import _compiled  # noqa: F401
from .catalog import BillableItem, Catalog, CatalogError, default_catalog, load_catalog
from .clock import Clock, ManualClock, SystemClock
from .config import ConfigError, MeteringConfig
from .context import MeteredCall, metered_call
from .errors import ApiError
from .ledger import CallRecord, LedgerStore, Outcome, OutcomeCount, StoreError
from .middleware import MeteringMiddleware
from .runtime import MeteringRuntime

__all__ = [
    "ApiError",
    "BillableItem",
    "CallRecord",
    "Catalog",
    "CatalogError",
    "Clock",
    "ConfigError",
    "LedgerStore",
    "ManualClock",
    "MeteredCall",
    "MeteringConfig",
    "MeteringMiddleware",
    "MeteringRuntime",
    "Outcome",
    "OutcomeCount",
    "StoreError",
    "SystemClock",
    "default_catalog",
    "load_catalog",
    "metered_call",
]
