"""Load and validate a catalog file (TOML).

A bad catalog is refused at load with a ``CatalogError`` naming the exact
field (``items[3].prices[0].tiers[1].price``), never half-loaded.
"""

from __future__ import annotations

import tomllib
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any

from .model import BillableItem, Catalog, PriceSchedule, Tier, Unit

__all__ = ["CatalogError", "default_catalog", "load_catalog", "parse_catalog"]

_DEFAULT_FILE = "default_catalog.toml"


class CatalogError(ValueError):
    """A catalog that cannot be used; the message names the bad field."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"catalog field {where}: {problem}")
        self.where = where


def _table(doc: Any, where: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise CatalogError(where, "must be a table")
    return doc


def _str(doc: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = doc.get(key, default)
    if not isinstance(value, str) or not value:
        raise CatalogError(f"{where}.{key}", "must be a non-empty string")
    return value


def _int(doc: dict[str, Any], key: str, where: str, *, optional: bool = False) -> int | None:
    value = doc.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise CatalogError(f"{where}.{key}", "must be a positive integer")
    return value


def _decimal(value: Any, where: str) -> Decimal:
    # Strings only: a TOML float would already have lost the exact price.
    if not isinstance(value, str):
        raise CatalogError(where, 'must be a decimal string such as "0.0016"')
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise CatalogError(where, f"{value!r} is not a decimal number") from None
    if not amount.is_finite() or amount < 0:
        raise CatalogError(where, "must be a finite, non-negative amount")
    return amount


def _instant(value: Any, where: str) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise CatalogError(where, "needs a UTC offset (e.g. 2020-01-01T00:00:00+08:00)")
        return value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    raise CatalogError(where, "must be a TOML date or offset date-time")


def _tiers(doc: Any, where: str) -> tuple[Tier, ...]:
    if not isinstance(doc, list) or not doc:
        raise CatalogError(where, "must be a non-empty array of tiers")
    tiers: list[Tier] = []
    previous = 0
    for i, raw in enumerate(doc):
        at = f"{where}[{i}]"
        t = _table(raw, at)
        up_to = _int(t, "up_to", at, optional=True)
        last = i == len(doc) - 1
        if up_to is None and not last:
            raise CatalogError(f"{at}.up_to", "only the last tier may be open-ended")
        if up_to is not None and up_to <= previous:
            raise CatalogError(f"{at}.up_to", "tiers must grow strictly")
        if up_to is not None and last:
            raise CatalogError(f"{at}.up_to", "the last tier must be open-ended")
        tiers.append(Tier(up_to, _decimal(t.get("price"), f"{at}.price")))
        previous = up_to or previous
    return tuple(tiers)


def _item(raw: Any, where: str, versions: dict[str, str], point_value: Decimal) -> BillableItem:
    doc = _table(raw, where)
    category = _str(doc, "category", where)
    if category not in versions:
        raise CatalogError(f"{where}.category", f"{category!r} is not in [categories]")
    action = _str(doc, "action", where)
    version = _str(doc, "version", where, versions[category])
    unit_text = _str(doc, "unit", where, "call")
    try:
        unit = Unit(unit_text)
    except ValueError:
        raise CatalogError(f"{where}.unit", f"{unit_text!r} is not one of call, second") from None
    free = doc.get("free", False)
    estimated = doc.get("estimated", False)
    for key, flag in (("free", free), ("estimated", estimated)):
        if not isinstance(flag, bool):
            raise CatalogError(f"{where}.{key}", "must be true or false")
    schedules: list[PriceSchedule] = []
    prices = doc.get("prices", [])
    if not isinstance(prices, list):
        raise CatalogError(f"{where}.prices", "must be an array of tables")
    for j, p in enumerate(prices):
        at = f"{where}.prices[{j}]"
        pt = _table(p, at)
        schedules.append(
            PriceSchedule(
                _instant(pt.get("effective_from"), f"{at}.effective_from"),
                _tiers(pt.get("tiers"), f"{at}.tiers"),
            )
        )
    starts = [s.effective_from for s in schedules]
    if len(set(starts)) != len(starts):
        raise CatalogError(f"{where}.prices", "two schedules share an effective_from")
    schedules.sort(key=lambda s: s.effective_from)
    if free and schedules:
        raise CatalogError(f"{where}.prices", "a free item has no prices")
    if not free and not schedules:
        raise CatalogError(f"{where}.prices", "a billable item needs at least one schedule")
    if "coefficient" in doc:
        coefficient = _decimal(doc["coefficient"], f"{where}.coefficient")
    elif schedules:
        # Assumption (billing rules section 3): first-tier price in points.
        coefficient = schedules[0].tiers[0].price / point_value
    else:
        coefficient = Decimal(0)
    default_qps = doc.get("default_qps")
    max_qps = doc.get("max_qps")
    return BillableItem(
        item=_str(doc, "item", where, f"{category}.{action}"),
        category=category,
        action=action,
        version=version,
        unit=unit,
        prices=tuple(schedules),
        coefficient=coefficient,
        default_qps=default_qps if isinstance(default_qps, int) else 0,
        max_qps=max_qps if isinstance(max_qps, int) else None,
        free=free,
        estimated=estimated,
    )


def parse_catalog(doc: dict[str, Any]) -> Catalog:
    """Build a catalog from a parsed TOML document."""
    point_value = _decimal(doc.get("point_value", "0.01"), "point_value")
    if point_value == 0:
        raise CatalogError("point_value", "must be above zero")
    cats = _table(doc.get("categories"), "categories")
    versions: dict[str, str] = {}
    cat_qps: dict[str, tuple[int, int | None]] = {}
    for name, raw in cats.items():
        at = f"categories.{name}"
        c = _table(raw, at)
        versions[name] = _str(c, "version", at)
        default_qps = _int(c, "default_qps", at)
        assert default_qps is not None
        cat_qps[name] = (default_qps, _int(c, "max_qps", at, optional=True))
    raw_items = doc.get("items")
    if not isinstance(raw_items, list) or not raw_items:
        raise CatalogError("items", "must be a non-empty array of tables")
    items: list[BillableItem] = []
    seen: dict[tuple[str, str], str] = {}
    codes: set[str] = set()
    for i, raw in enumerate(raw_items):
        where = f"items[{i}]"
        t = _table(raw, where)
        category = t.get("category")
        if isinstance(category, str) and category in cat_qps:
            t = dict(t)
            d, m = cat_qps[category]
            t.setdefault("default_qps", d)
            t.setdefault("max_qps", m)
            _int(t, "default_qps", where)
            _int(t, "max_qps", where, optional=True)
        item = _item(t, where, versions, point_value)
        api = (item.category, item.action)
        if api in seen:
            raise CatalogError(f"{where}.action", f"{api} is already {seen[api]}")
        if item.item in codes:
            raise CatalogError(f"{where}.item", f"{item.item!r} is used twice")
        seen[api] = where
        codes.add(item.item)
        items.append(item)
    return Catalog(tuple(items), point_value, versions)


def load_catalog(path: str | Path) -> Catalog:
    """Load a user's catalog file; raises ``CatalogError`` or ``OSError``."""
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(str(path), f"not valid TOML: {exc}") from None
    return parse_catalog(doc)


def default_catalog() -> Catalog:
    """The catalog shipped with the package."""
    text = resources.files(__package__).joinpath(_DEFAULT_FILE).read_text("utf-8")
    return parse_catalog(tomllib.loads(text))
