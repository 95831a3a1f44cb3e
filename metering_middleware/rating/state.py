"""Where deduction stopped: points left per plan, pay-as-you-go positions per month.

Passing a pass's ``state`` to the next pass over the following calls gives exactly the
result of one pass over all of them. ``to_plain``/``from_plain`` turn it into nested
dicts of strings and ints (JSON-friendly) so settlement can persist it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

from .errors import DeductionError
from .months import Month, parse_month

__all__ = ["DeductionState", "PositionKey"]

#: (account, item code, billing month)
PositionKey = tuple[str, str, Month]


def _frozen(mapping: Mapping[Any, Any]) -> Mapping[Any, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class DeductionState:
    """A snapshot after a deduction pass (not hashable: it holds mappings).

    ``remaining``: resource-plan id -> points left; a plan not listed has all its points.
    ``positions``: (account, item, month) -> pay-as-you-go calls already priced in that
    month; absent means none.
    """

    remaining: Mapping[str, Decimal] = field(default_factory=dict)
    positions: Mapping[PositionKey, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for plan_id, points in self.remaining.items():
            if not isinstance(points, Decimal) or not points.is_finite() or points < 0:
                raise DeductionError(f"state: plan {plan_id!r} has invalid points {points!r}")
        for key, n in self.positions.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise DeductionError(f"state: position {key!r} must be an int >= 0, got {n!r}")
            if not (isinstance(key, tuple) and len(key) == 3 and isinstance(key[2], Month)):
                raise DeductionError(f"state: position {key!r} is not (account, item, Month)")
        object.__setattr__(self, "remaining", _frozen(self.remaining))
        object.__setattr__(self, "positions", _frozen(self.positions))

    def position(self, account: str, item: str, month: Month) -> int:
        return self.positions.get((account, item, month), 0)

    def to_plain(self) -> dict[str, Any]:
        """``{"remaining": {plan: "123.45"}, "positions": {account: {item: {"YYYY-MM": n}}}}``."""
        positions: dict[str, dict[str, dict[str, int]]] = {}
        for (account, item, month), n in sorted(self.positions.items()):
            positions.setdefault(account, {}).setdefault(item, {})[str(month)] = n
        return {
            "remaining": {k: str(v) for k, v in sorted(self.remaining.items())},
            "positions": positions,
        }

    @classmethod
    def from_plain(cls, doc: Mapping[str, Any]) -> DeductionState:
        """Inverse of ``to_plain``; raises ``DeductionError`` naming the bad entry."""
        remaining: dict[str, Decimal] = {}
        for plan_id, text in dict(doc.get("remaining", {})).items():
            try:
                remaining[str(plan_id)] = Decimal(str(text))
            except InvalidOperation:
                raise DeductionError(f"state: remaining[{plan_id!r}] is not a decimal") from None
        positions: dict[PositionKey, int] = {}
        for account, by_item in dict(doc.get("positions", {})).items():
            for item, by_month in dict(by_item).items():
                for month, n in dict(by_month).items():
                    positions[(str(account), str(item), parse_month(str(month)))] = n
        return cls(remaining, positions)
