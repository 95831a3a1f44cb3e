"""Reading the operator's own usage export from Alibaba Cloud (private).

The shape is Alibaba's Bill Details ("明细账单", Expenses and Costs console, "Export
CSV"; the same fields as BSS OpenAPI ``DescribeInstanceBill`` / ``DescribeSplitItemBill``
and the ``BillingItemDetail`` files of ``SubscribeBillToOSS``) with the statistic item
*Billable Item* and the period *Detail* (hourly) or *Day*, and the plainer "View Usage
Details" export (start, end, billable item, usage, unit). Column names come in English
or Chinese, in the API's spelling (``UsageStartTime``) or the console's (``Start Time``,
``使用开始时间``): :data:`COLUMNS` lists every accepted name; docs/reconcile.md says which
is which. Since January 2024 a tiered item is split into one row per tier: rows of
one item and period are summed.

Times without an offset are in the export's zone (UTC+8, the console's, unless the
caller says otherwise). Every malformed input is one :class:`ExportError` naming the
line and column; nothing here raises anything else for bad bytes.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from enum import StrEnum

__all__ = ["COLUMNS", "ExportError", "Granularity", "UpstreamExport", "UsageRow", "read_export"]

#: Canonical column -> accepted header names (compared without case, blanks, ``_``, ``-``).
COLUMNS: Mapping[str, tuple[str, ...]] = {
    "start": (
        "UsageStartTime",
        "Usage Start Time",
        "StartTime",
        "Start Time",
        "Start",
        "使用开始时间",
        "开始时间",
        "计费开始时间",
        "用量开始时间",
    ),
    "end": (
        "UsageEndTime",
        "Usage End Time",
        "EndTime",
        "End Time",
        "End",
        "使用结束时间",
        "结束时间",
        "计费结束时间",
        "用量结束时间",
    ),
    "date": ("BillingDate", "Billing Date", "UsageDate", "Date", "账单日期", "消费日期", "日期"),
    "item_code": (
        "BillingItemCode",
        "Billable Item Code",
        "计费项Code",
        "计费项编码",
        "计费项代码",
    ),
    "item": (
        "BillingItem",
        "Billing Item",
        "Billable Item",
        "BillingItemName",
        "Action",
        "API",
        "计费项",
        "计费项名称",
        "计量项",
        "计量项名称",
        "接口",
        "接口名称",
    ),
    "product": (
        "ProductCode",
        "Product Code",
        "产品Code",
        "产品代码",
        "产品编码",
        "ProductName",
        "Product Name",
        "Product",
        "产品",
        "产品名称",
    ),
    "usage": ("Usage", "Usage Amount", "Quantity", "用量", "使用量", "调用量", "调用次数"),
    "unit": ("UsageUnit", "Usage Unit", "Unit", "用量单位", "单位"),
    "amount": (
        "PretaxAmount",
        "Pretax Amount",
        "Amount After Discount",
        "Amount",
        "Cost",
        "应付金额",
        "优惠后金额",
        "金额",
        "费用",
    ),
    "gross": (
        "PretaxGrossAmount",
        "Pretax Gross Amount",
        "Catalogue Gross Amount",
        "Gross Amount",
        "原价",
        "官网价",
        "目录价",
    ),
    "currency": ("Currency", "币种"),
}

#: Calls per unit of the usage column; a unit not here is an error naming it.
_UNITS: Mapping[str, int] = {
    **dict.fromkeys(
        (
            "",
            "1",
            "次",
            "次数",
            "个",
            "张",
            "条",
            "call",
            "calls",
            "time",
            "times",
            "count",
            "counts",
            "request",
            "requests",
        ),
        1,
    ),
    **dict.fromkeys(("千次", "1000次", "1000calls", "thousand", "kcalls", "k"), 1000),
    **dict.fromkeys(("万次", "10000次", "10000calls"), 10000),
}

_MAX_BYTES = 256 << 20  # an export of a month by the hour is far below this


class ExportError(ValueError):
    """A usage export that cannot be read: one line naming the line and column."""


class Granularity(StrEnum):
    HOUR = "hour"
    DAY = "day"

    @property
    def step(self) -> timedelta:
        return timedelta(hours=1) if self is Granularity.HOUR else timedelta(days=1)


@dataclass(frozen=True, slots=True)
class UsageRow:
    line: int
    raw_item: str  # as the export names it
    product: str
    start: datetime  # aware UTC
    granularity: Granularity  # the span the row covers
    calls: int
    amount: Decimal | None  # what the upstream charges for it (the amount column)


@dataclass(frozen=True, slots=True)
class UpstreamExport:
    rows: tuple[UsageRow, ...]
    #: The header of the money column used (None: the export has none).
    amount_column: str | None
    #: Each canonical column found -> the header it was found under.
    headers: Mapping[str, str]
    #: Rows of other products, skipped (``products``).
    skipped: int = 0


def _key(name: str) -> str:
    return re.sub("[\\s_\\-/()\uff08\uff09]", "", name).lower()


_ALIASES: Mapping[str, str] = {_key(a): col for col, names in COLUMNS.items() for a in names}


def _decode(data: bytes, name: str) -> str:
    if not data.strip():
        raise ExportError(f"{name}: empty file: no header line (expected a CSV usage export)")
    if b"\x00" in data[:65536]:
        raise ExportError(f"{name} line 1: not a CSV text file (NUL bytes: a binary file?)")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ExportError(
            f"{name} line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); "
            "export the CSV as UTF-8"
        ) from None


def _time(text: str, zone: tzinfo) -> datetime:
    value = datetime.fromisoformat(text.strip().replace("/", "-"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.astimezone(UTC)


def _number(text: str) -> Decimal:
    t = text.strip()
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", t):  # 1,234.5: a thousands separator
        t = t.replace(",", "")
    if not re.fullmatch(r"-?\d+(\.\d+)?", t):
        raise InvalidOperation(t)
    return Decimal(t)


def _span_name(step: Granularity) -> str:
    return "an hour's" if step is Granularity.HOUR else "a day's"


def _aligned(when: datetime, step: Granularity, zone: tzinfo) -> bool:
    local = when.astimezone(zone)
    if local.minute or local.second or local.microsecond:
        return False
    return step is Granularity.HOUR or local.hour == 0


class _Reader:
    """One pass over the rows; ``fail`` builds the error naming line and column."""

    def __init__(self, name: str, zone: tzinfo, headers: dict[str, str]) -> None:
        self.name = name
        self.zone = zone
        self.headers = headers
        self.line = 1

    def fail(self, column: str | None, why: str) -> ExportError:
        where = f"{self.name} line {self.line}"
        if column is not None:
            where += f", column {self.headers.get(column, column)}"
        return ExportError(f"{where}: {why}")

    def when(self, fields: Mapping[str, str], column: str) -> datetime | None:
        text = fields.get(column, "").strip()
        if not text:
            return None
        try:
            return _time(text, self.zone)
        except ValueError:
            raise self.fail(
                column, f"{text!r} is not a time (2026-11-01 08:00:00 or ISO 8601)"
            ) from None

    def span(self, fields: Mapping[str, str]) -> tuple[datetime, Granularity | None]:
        start = self.when(fields, "start")
        if start is None:
            day = self.when(fields, "date")
            if day is None:
                column = "start" if "start" in self.headers else "date"
                raise self.fail(column, "no start time or date")
            if not _aligned(day, Granularity.DAY, self.zone):
                raise self.fail("date", "a billing date names a whole day, without a time")
            return day, Granularity.DAY
        end = self.when(fields, "end")
        if end is None:
            return start, None  # the file's other rows decide (read_export)
        if (end + timedelta(seconds=1)) - start in (timedelta(hours=1), timedelta(days=1)):
            end += timedelta(seconds=1)  # an inclusive end: 10:00:00 to 10:59:59
        for step in Granularity:
            if end - start == step.step:
                if not _aligned(start, step, self.zone):
                    raise self.fail(
                        "start", f"{_span_name(step)} row must start on the {step.value}"
                    )
                return start, step
        raise self.fail(
            "end", "a row must cover one hour or one day (export by Detail/hour or by Day)"
        )

    def calls(self, fields: Mapping[str, str]) -> int:
        text = fields.get("usage", "").strip()
        try:
            usage = _number(text)
        except InvalidOperation:
            raise self.fail("usage", f"{text!r} is not a number") from None
        unit_text = fields.get("unit", "").strip()
        factor = _UNITS.get(_key(unit_text))
        if factor is None:
            if unit_text in ("秒", "s", "second", "seconds"):
                raise self.fail("unit", "usage by duration (video items) is not metered")
            raise self.fail("unit", f"unknown unit {unit_text!r} (calls: 次, 千次, 万次, calls)")
        calls = usage * factor
        if usage < 0 or calls != calls.to_integral_value():
            raise self.fail("usage", f"{text!r} {unit_text} is not a whole number of calls")
        return int(calls)

    def money(self, fields: Mapping[str, str], column: str | None) -> Decimal | None:
        if column is None:
            return None
        text = fields.get(column, "").strip()
        if not text:
            return Decimal(0)
        try:
            return _number(text)
        except InvalidOperation:
            raise self.fail(column, f"{text!r} is not an amount") from None


def read_export(
    data: bytes, *, name: str, zone: tzinfo, products: tuple[str, ...] = ()
) -> UpstreamExport:
    """Parse an export; ``zone`` is the zone of times written without an offset.

    With ``products``, only rows whose product column contains one of them (without
    case) are read: a whole bill export holds every product the operator uses.
    """
    if len(data) > _MAX_BYTES:
        raise ExportError(f"{name}: larger than {_MAX_BYTES >> 20} MiB; export one month")
    text = _decode(data, name)
    try:
        table = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise ExportError(f"{name}: not a readable CSV file ({exc})") from None
    while table and not any(c.strip() for c in table[0]):
        table.pop(0)
    if not table:
        raise ExportError(f"{name}: empty file: no header line (expected a CSV usage export)")
    header = table[0]
    headers: dict[str, str] = {}
    index: dict[str, int] = {}
    for i, cell in enumerate(header):
        column = _ALIASES.get(_key(cell))
        if column is not None and column not in index:
            headers[column], index[column] = cell.strip(), i
    reader = _Reader(name, zone, headers)
    if not index:
        shown = ", ".join(h.strip() for h in header[:4] if h.strip())
        raise reader.fail(
            None,
            f"not an Alibaba Cloud usage export: no known column in the header ({shown!r}); "
            "expected BillingItem, Usage, UsageStartTime or their Chinese names",
        )
    for needed, choices in (
        ("item", ("item", "item_code")),
        ("usage", ("usage",)),
        ("start", ("start", "date")),
    ):
        if not any(c in index for c in choices):
            names = " / ".join(COLUMNS[c][0] for c in choices)
            raise reader.fail(needed, f"missing column {names} (or an alias: docs/reconcile.md)")
    amount_column = "amount" if "amount" in index else ("gross" if "gross" in index else None)
    rows: list[UsageRow] = []
    open_ended: list[int] = []
    skipped = 0
    for number, cells in enumerate(table[1:], start=2):
        reader.line = number
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise reader.fail(None, f"{len(cells)} fields where the header has {len(header)}")
        fields = {col: cells[i] for col, i in index.items()}
        if products:
            if "product" not in index:
                raise reader.fail("product", "no product column to select rows by (--product)")
            product = fields["product"].lower()
            if not any(p.lower() in product for p in products):
                skipped += 1
                continue
        currency = fields.get("currency", "").strip().upper()
        if currency not in ("", "CNY", "RMB"):
            raise reader.fail("currency", f"amounts in {currency}, not CNY")
        raw_item = fields.get("item_code", "").strip() or fields.get("item", "").strip()
        if not raw_item:
            raise reader.fail("item_code" if "item" not in index else "item", "no billable item")
        start, step = reader.span(fields)
        if step is None:
            open_ended.append(len(rows))
        rows.append(
            UsageRow(
                number,
                raw_item,
                fields.get("product", "").strip(),
                start,
                step or Granularity.DAY,
                reader.calls(fields),
                reader.money(fields, amount_column),
            )
        )
    if open_ended:
        # Start times alone: rows that all start at midnight are days, else hours.
        hourly = any(not _aligned(rows[i].start, Granularity.DAY, zone) for i in open_ended)
        step = Granularity.HOUR if hourly else Granularity.DAY
        for i in open_ended:
            row = rows[i]
            if not _aligned(row.start, step, zone):
                reader.line = row.line
                raise reader.fail("start", f"{_span_name(step)} row must start on the {step.value}")
            rows[i] = UsageRow(
                row.line, row.raw_item, row.product, row.start, step, row.calls, row.amount
            )
    return UpstreamExport(
        tuple(rows), headers.get(amount_column) if amount_column else None, headers, skipped
    )
