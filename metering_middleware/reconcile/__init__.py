"""Reconciliation with the upstream: the operator's Alibaba Cloud usage export against
what the gateway forwarded and charged, and the month's margin (docs/reconcile.md).

Revenue assurance: every difference per billable item and period gets its likely
reason (free outcomes the upstream billed, calls outside the gateway, calls the gateway
gave up on, a period boundary, charged calls the upstream did not bill, unknown items).
"""

from ._compare import Comparison, Difference, Reason
from ._export import COLUMNS, ExportError, Granularity, UpstreamExport, UsageRow, read_export
from ._items import ItemNames, read_item_map
from ._margin import Margin, MarginLine
from ._run import Reconciliation, reconcile

__all__ = [
    "COLUMNS",
    "Comparison",
    "Difference",
    "ExportError",
    "Granularity",
    "ItemNames",
    "Margin",
    "MarginLine",
    "Reason",
    "Reconciliation",
    "UpstreamExport",
    "UsageRow",
    "read_export",
    "read_item_map",
    "reconcile",
]
