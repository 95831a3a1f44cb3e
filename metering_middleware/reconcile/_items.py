"""Which catalog item an export's billable item names (private).

Names are matched without case or blanks against what the catalog knows of each item:
its billing code (``facebody.DetectFace``), ``category/action``, ``category:action``
and the action alone when only one category has it (otherwise the row's product column
must name the category). Alibaba's own billable-item names (often Chinese) are not in
the catalog: an operator maps them once in a small CSV (``--item-map``, columns
``upstream_item,item``), checked against the catalog when read.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping

from ..catalog import Catalog
from ._export import ExportError

__all__ = ["ItemNames", "read_item_map"]


def _key(name: str) -> str:
    return re.sub(r"\s", "", name).lower()


class ItemNames:
    def __init__(self, catalog: Catalog, extra: Mapping[str, str] | None = None) -> None:
        names: dict[str, str] = {}
        actions: dict[str, list[str]] = {}
        for it in catalog.items:
            for alias in (it.item, f"{it.category}/{it.action}", f"{it.category}:{it.action}"):
                names[_key(alias)] = it.item
            actions.setdefault(_key(it.action), []).append(it.item)
        self._by_category = {(it.category, _key(it.action)): it.item for it in catalog.items}
        self._categories = sorted(catalog.categories, key=len, reverse=True)
        self._actions = actions
        self._names = names
        for upstream, item in (extra or {}).items():
            self._names[_key(upstream)] = item

    def lookup(self, name: str, product: str = "") -> str | None:
        """The catalog item ``name`` stands for, or None (an unknown item)."""
        key = _key(name)
        found = self._names.get(key)
        if found is not None:
            return found
        items = self._actions.get(key, [])
        if len(items) == 1:
            return items[0]
        # An action in several categories: the product column may name the category.
        product_key = product.lower()
        for category in self._categories:
            if category in product_key:
                return self._by_category.get((category, key))
        return None


def read_item_map(data: bytes, *, name: str, catalog: Catalog) -> dict[str, str]:
    """``upstream_item,item`` rows (a header line first); every item must be the catalog's."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ExportError(f"{name} line 1: not UTF-8 text") from None
    known = catalog.by_item()
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows or [c.strip().lower() for c in rows[0]][:2] != ["upstream_item", "item"]:
        raise ExportError(f"{name} line 1: the header must be upstream_item,item")
    mapping: dict[str, str] = {}
    for number, cells in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) < 2 or not cells[0].strip():
            raise ExportError(f"{name} line {number}: two fields expected: upstream_item,item")
        item = cells[1].strip()
        if item not in known:
            raise ExportError(
                f"{name} line {number}, column item: {item!r} is not a catalog item "
                "(e.g. facebody.DetectFace)"
            )
        mapping[cells[0].strip()] = item
    return mapping
