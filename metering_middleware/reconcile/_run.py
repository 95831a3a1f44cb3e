"""One reconciliation: read the export, read the ledger (off the event loop), compare,
and the month's margin (private)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path

from ..catalog import Catalog
from ..clock import BEIJING
from ..rating import Month
from ._compare import Comparison, compare
from ._export import ExportError, Granularity, UpstreamExport, read_export
from ._items import ItemNames
from ._ledger_reads import read_gateway_counts, read_tenant_charges
from ._margin import Margin, margin

__all__ = ["Reconciliation", "reconcile"]


@dataclass(frozen=True, slots=True)
class Reconciliation:
    export: UpstreamExport
    step: Granularity
    since: datetime
    until: datetime
    comparison: Comparison
    margin: Margin | None  # None when the range is not one billing month


def _range(
    export: UpstreamExport,
    month: Month | None,
    since: datetime | None,
    until: datetime | None,
    file_name: str,
) -> tuple[datetime, datetime]:
    if month is not None:
        return month.start, month.end
    if since is not None and until is not None:
        return since, until
    if not export.rows:
        raise ExportError(f"{file_name}: no usage rows; give --month or --since and --until")
    lo = min(r.start for r in export.rows)
    hi = max(r.start + r.granularity.step for r in export.rows)
    return since or lo, until or hi


async def reconcile(
    ledger: Path,
    data: bytes,
    *,
    file_name: str,
    catalog: Catalog,
    zone: tzinfo = BEIJING,
    step: Granularity | None = None,
    month: Month | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    item_map: dict[str, str] | None = None,
    products: tuple[str, ...] = (),
) -> Reconciliation:
    """Compare ``data`` (the export's bytes) with the SQLite ledger at ``ledger``.

    ``ExportError`` for an unreadable export (one line naming the line and column).
    """
    export = await asyncio.to_thread(
        read_export, data, name=file_name, zone=zone, products=products
    )
    if step is None:
        hourly = any(r.granularity is Granularity.HOUR for r in export.rows)
        step = Granularity.HOUR if hourly else Granularity.DAY
    lo, hi = _range(export, month, since, until, file_name)
    if lo >= hi:
        raise ValueError("the range is empty: --since must be before --until")
    names = ItemNames(catalog, item_map)
    offset = zone.utcoffset(None)
    by_minute = offset is not None and offset.total_seconds() % 3600 != 0
    counts = await asyncio.to_thread(
        read_gateway_counts, ledger, catalog, lo, hi, by_minute=by_minute
    )
    comparison = compare(
        export, names, counts, step=step, zone=zone, since=lo, until=hi, file_name=file_name
    )
    the_month = month
    if the_month is None and Month.of(lo).start == lo and Month.of(lo).end == hi:
        the_month = Month.of(lo)
    result_margin = None
    if the_month is not None:
        charges = await asyncio.to_thread(read_tenant_charges, ledger, str(the_month))
        result_margin = margin(
            export, names, catalog, charges, month=str(the_month), since=lo, until=hi
        )
    return Reconciliation(export, step, lo, hi, comparison, result_margin)
