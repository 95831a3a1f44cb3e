"""Item by item, period by period: what the upstream billed against what the gateway
forwarded and charged, each difference with its likely reason (private).

Per item and period, ``U`` calls billed by the upstream (the export), ``C`` charged by
the gateway (ledger records), ``F = C +`` the free answers the upstream gave to calls
the gateway forwarded (per-minute outcome counters; refusals never reached it), and
``N`` calls the gateway forwarded but gave up on (timeouts, a broken upstream). In
this order:

- ``U - C`` non-zero and the next period's exactly its opposite: **period_boundary**
  (late records or clock skew put calls on the other side of the boundary);
- ``C < U <= F``: **free_billed**, free outcomes the upstream billed (codes named);
- ``F < U <= F + N``: **unanswered_billed**, calls the gateway gave up on were billed;
- ``U > F + N``: **outside_gateway**, calls that never passed the gateway (another
  client using the operator's AccessKey);
- ``U < C``: **not_billed**, charged calls the upstream did not bill (investigate);
- a billable item the catalog does not know: **unknown_item**.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from enum import StrEnum

from ._export import ExportError, Granularity, UpstreamExport
from ._items import ItemNames
from ._ledger_reads import GatewayCounts

__all__ = ["Comparison", "Difference", "Reason", "compare", "period_of"]


class Reason(StrEnum):
    PERIOD_BOUNDARY = "period_boundary"
    FREE_BILLED = "free_billed"
    UNANSWERED_BILLED = "unanswered_billed"
    OUTSIDE_GATEWAY = "outside_gateway"
    NOT_BILLED = "not_billed"
    UNKNOWN_ITEM = "unknown_item"
    MATCH = "match"


@dataclass(frozen=True, slots=True)
class Difference:
    start: datetime  # the period, aware UTC
    end: datetime
    item: str  # the catalog item, or the export's name for an unknown one
    upstream: int
    charged: int
    forwarded: int
    reason: Reason
    detail: str

    @property
    def difference(self) -> int:
        return self.upstream - self.charged


@dataclass(frozen=True, slots=True)
class Comparison:
    rows: tuple[Difference, ...]  # every (item, period) with a call, in (item, start) order
    periods: int
    ignored_rows: int  # export rows outside the range

    @property
    def differences(self) -> tuple[Difference, ...]:
        return tuple(d for d in self.rows if d.reason is not Reason.MATCH)


def period_of(when: datetime, step: Granularity, zone: tzinfo) -> datetime:
    """The start (UTC) of the hour or day (in ``zone``) that ``when`` falls in."""
    local = when.astimezone(zone).replace(minute=0, second=0, microsecond=0)
    if step is Granularity.DAY:
        local = local.replace(hour=0)
    return local.astimezone(UTC)


def _codes(codes: Mapping[str, int]) -> str:
    return ", ".join(f"{c} {n}" for c, n in sorted(codes.items(), key=lambda kv: (-kv[1], kv[0])))


def compare(
    export: UpstreamExport,
    names: ItemNames,
    counts: GatewayCounts,
    *,
    step: Granularity,
    zone: tzinfo,
    since: datetime,
    until: datetime,
    file_name: str,
) -> Comparison:
    upstream: dict[tuple[str, datetime], int] = {}
    unknown: dict[tuple[str, datetime], int] = {}
    unknown_lines: dict[str, list[int]] = {}
    known = ignored = 0
    for row in export.rows:
        if not since <= row.start < until:
            ignored += 1
            continue
        if step is Granularity.HOUR and row.granularity is Granularity.DAY:
            raise ExportError(
                f"{file_name} line {row.line}: the row covers a whole day; reconcile by "
                "hour needs an hourly export (Detail), or use --period day"
            )
        item = names.lookup(row.raw_item, row.product)
        key_start = period_of(row.start, step, zone)
        if item is None:
            unknown[(row.raw_item, key_start)] = (
                unknown.get((row.raw_item, key_start), 0) + row.calls
            )
            unknown_lines.setdefault(row.raw_item, []).append(row.line)
            continue
        known += 1
        upstream[(item, key_start)] = upstream.get((item, key_start), 0) + row.calls
    if unknown and not known:
        first = min(unknown_lines.items(), key=lambda kv: kv[1][0])
        raise ExportError(
            f"{file_name} line {first[1][0]}: no billable item of the file is a catalog item "
            f"({first[0]!r}): not a VIAPI usage export, or map its names with --item-map"
        )

    # The ledger's buckets (hours or minutes, UTC) into the reconciliation's periods.
    charged: dict[tuple[str, datetime], int] = {}
    for (item, bucket), n in counts.charged.items():
        key = (item, period_of(bucket, step, zone))
        charged[key] = charged.get(key, 0) + n
    free = _by_period(counts.free, step, zone)
    unanswered = _by_period(counts.unanswered, step, zone)
    keys = sorted(set(upstream) | {k for k, n in charged.items() if n})
    rows: dict[tuple[str, datetime], Difference] = {}
    for item, start in keys:
        u, c = upstream.get((item, start), 0), charged.get((item, start), 0)
        fcodes, ncodes = free.get((item, start), {}), unanswered.get((item, start), {})
        f = c + sum(fcodes.values())
        n = sum(ncodes.values())
        rows[(item, start)] = _classify(item, start, step, u, c, f, n, fcodes, ncodes)
    _mark_boundaries(rows, step)
    for (raw, start), u in sorted(unknown.items()):
        lines = ", ".join(str(x) for x in sorted(set(unknown_lines[raw]))[:5])
        rows[(raw, start)] = Difference(
            start,
            start + step.step,
            raw,
            u,
            0,
            0,
            Reason.UNKNOWN_ITEM,
            f"{raw!r} is not a catalog item (lines {lines}): map it with --item-map",
        )
    # Unknown items last: they need a mapping, not an investigation of the period.
    ordered = tuple(
        rows[k] for k in sorted(rows, key=lambda k: (rows[k].reason is Reason.UNKNOWN_ITEM, k))
    )
    periods = len({k[1] for k in rows})
    return Comparison(ordered, periods, ignored)


def _by_period(
    src: Mapping[tuple[str, datetime], Mapping[str, int]], step: Granularity, zone: tzinfo
) -> dict[tuple[str, datetime], dict[str, int]]:
    out: dict[tuple[str, datetime], dict[str, int]] = {}
    for (item, bucket), codes in src.items():
        merged = out.setdefault((item, period_of(bucket, step, zone)), {})
        for code, n in codes.items():
            merged[code] = merged.get(code, 0) + n
    return out


def _classify(
    item: str,
    start: datetime,
    step: Granularity,
    u: int,
    c: int,
    f: int,
    n: int,
    fcodes: Mapping[str, int],
    ncodes: Mapping[str, int],
) -> Difference:
    def diff(reason: Reason, detail: str) -> Difference:
        return Difference(start, start + step.step, item, u, c, f, reason, detail)

    if u == c:
        return diff(Reason.MATCH, "")
    if u < c:
        return diff(
            Reason.NOT_BILLED,
            f"the gateway charged {c - u} call(s) the upstream did not bill: investigate",
        )
    if u <= f:
        return diff(
            Reason.FREE_BILLED,
            f"the upstream billed {u - c} of the {f - c} free answer(s) it gave: {_codes(fcodes)}",
        )
    free_part = f" (and {f - c} free answer(s): {_codes(fcodes)})" if f > c else ""
    if u <= f + n:
        return diff(
            Reason.UNANSWERED_BILLED,
            f"the upstream billed {u - f} call(s) the gateway gave up on: {_codes(ncodes)}"
            + free_part,
        )
    return diff(
        Reason.OUTSIDE_GATEWAY,
        f"the upstream billed {u - f - n} call(s) more than the gateway forwarded: calls "
        "outside the gateway (another client using the operator's AccessKey?)" + free_part,
    )


def _mark_boundaries(rows: dict[tuple[str, datetime], Difference], step: Granularity) -> None:
    """A difference that the next period cancels exactly is one boundary's, not two."""
    by_item: dict[str, list[datetime]] = {}
    for item, start in sorted(rows):
        if rows[(item, start)].reason is not Reason.MATCH:
            by_item.setdefault(item, []).append(start)
    for item, starts in by_item.items():
        i = 0
        while i + 1 < len(starts):
            a, b = rows[(item, starts[i])], rows[(item, starts[i + 1])]
            if b.start == a.end and a.difference == -b.difference:
                boundary = b.start.isoformat().replace("+00:00", "Z")
                for one, other in ((a, b), (b, a)):
                    rows[(item, one.start)] = Difference(
                        one.start,
                        one.end,
                        item,
                        one.upstream,
                        one.charged,
                        one.forwarded,
                        Reason.PERIOD_BOUNDARY,
                        f"{one.difference:+d} here, {other.difference:+d} in the adjacent "
                        f"period: late records or clock skew at the boundary {boundary}",
                    )
                i += 2
            else:
                i += 1
