"""The operator's upstream budget: its own QPS at Alibaba, per API, shared by every tenant.

Tenants' QPS subscriptions are resold out of the operator's own QPS. A call that fits
the tenant's entitlement but not the operator's budget would only be throttled
upstream (and cost the operator a slot of its own limit), so the limiter refuses it
at the gateway, in the same atomic decision as the tenant's admission.

The setting (``upstream_qps``) is written as Alibaba states limits, and as the catalog
states ``max_qps``: per API, with a category-wide default::

    facebody = 50                 # every facebody API: 50 QPS each (not 50 shared)
    "facebody.DetectFace" = 100   # this API: 100 QPS

A key with a dot names one API (``<category>.<Action>``, the catalog's item code);
without one it is the default for each API of the category. An API with neither has no
budget (unlimited by the gateway, as before).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .base import LimiterError

if TYPE_CHECKING:
    from ..catalog import Catalog

__all__ = ["UpstreamBudgets", "checked_budgets", "parse_budget_spec"]


class UpstreamBudgets:
    """``upstream_qps`` resolved: ``budget(category, action)`` is one or two dict gets."""

    __slots__ = ("_by_api", "_by_category", "_cache")

    def __init__(self, spec: Mapping[str, Any] | None = None) -> None:
        by_api: dict[tuple[str, str], int] = {}
        by_category: dict[str, int] = {}
        for key, value in (spec or {}).items():
            name = str(key).strip()
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LimiterError(f"upstream_qps.{name}: must be a positive integer (QPS)")
            category, dot, action = name.partition(".")
            if not category or (dot and not action) or "." in action:
                raise LimiterError(
                    f"upstream_qps.{name}: write a category (facebody) or one API "
                    "(facebody.DetectFace)"
                )
            if dot:
                by_api[(category, action)] = value
            else:
                by_category[category] = value
        self._by_api = by_api
        self._by_category = by_category
        # Resolved lookups: an API asked once is one dict get afterwards (APIs are few).
        self._cache: dict[tuple[str, str], int | None] = {}

    def __bool__(self) -> bool:
        return bool(self._by_api or self._by_category)

    def budget(self, category: str, action: str) -> int | None:
        """The API's budget in QPS, or ``None`` when it has none."""
        key = (category, action)
        try:
            return self._cache[key]
        except KeyError:
            pass
        value = self._by_api.get(key)
        if value is None:
            value = self._by_category.get(category)
        if len(self._cache) < 4096:  # bounded: unknown APIs never reach the limiter anyway
            self._cache[key] = value
        return value

    def spec(self) -> dict[str, int]:
        """The setting as written (``category`` and ``category.Action`` keys)."""
        out = dict(self._by_category)
        out.update({f"{c}.{a}": n for (c, a), n in self._by_api.items()})
        return out

    def unknown(self, categories: frozenset[str], apis: frozenset[tuple[str, str]]) -> list[str]:
        """Keys naming no category or API of the catalog (a typo would budget nothing)."""
        bad = [c for c in self._by_category if c not in categories]
        bad += [f"{c}.{a}" for (c, a) in self._by_api if (c, a) not in apis]
        return sorted(bad)


def parse_budget_spec(text: str, *, where: str = "upstream_qps") -> dict[str, int]:
    """``facebody=50,facebody.DetectFace=100`` (an environment variable) as a mapping."""
    out: dict[str, int] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        try:
            out[key.strip()] = int(value)
        except ValueError:
            raise LimiterError(
                f"{where}: {part!r} is not <category>=<QPS> or <category>.<Action>=<QPS>"
            ) from None
        if not sep or not key.strip():
            raise LimiterError(f"{where}: {part!r} is not <category>=<QPS>")
    return out


def checked_budgets(spec: Mapping[str, int], catalog: Catalog) -> dict[str, int]:
    """``spec``, refused (``LimiterError``) when a key names no category or API of the
    catalog: a typo would otherwise budget nothing, silently."""
    budgets = UpstreamBudgets(spec)
    apis = frozenset((item.category, item.action) for item in catalog.items)
    bad = budgets.unknown(catalog.categories, apis)
    if bad:
        raise LimiterError(
            f"upstream_qps: {', '.join(bad)}: not a category or API (category.Action) "
            "of the catalog"
        )
    return budgets.spec()
