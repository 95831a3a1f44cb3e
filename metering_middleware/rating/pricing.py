"""Pay-as-you-go pricing: graduated monthly tiers, priced by counts, never call by call.

The n-th pay-as-you-go call of an item in an account's billing month (UTC+8) costs the
price of the tier n falls in, under the schedule in force at the call's ``occurred_at``
(billing rules section 5). ``price_run`` prices k consecutive such calls at once by
splitting them at tier boundaries: O(tiers), whatever k is. Line amounts are exact;
only a month's total is rounded (recorded to 3 places, charged to 2, both down).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from ..catalog import PriceSchedule
from .money import CHARGED_PLACES, RECORDED_PLACES, exact_mul, exact_sum, round_down
from .months import Month
from .results import Line, SourceKind

__all__ = ["MonthTotal", "PricePiece", "month_total", "month_totals", "price_run", "tier_room"]


@dataclass(frozen=True, slots=True)
class PricePiece:
    """``calls`` consecutive calls inside one tier; ``amount`` is exact."""

    tier: int  # index into the schedule's tiers
    calls: int
    unit_price: Decimal
    amount: Decimal


def tier_room(schedule: PriceSchedule, n0: int) -> tuple[int, int | None]:
    """Where the next call lands after ``n0`` calls this month: ``(tier index, room)``.

    ``room`` is how many calls, that one included, still fit in the tier; ``None`` in the
    open-ended last tier.
    """
    if n0 < 0:
        raise ValueError(f"position must be >= 0, got {n0}")
    index = schedule.tier_index(n0 + 1)
    up_to = schedule.tiers[index].up_to
    return index, (None if up_to is None else up_to - n0)


def price_run(schedule: PriceSchedule, n0: int, k: int) -> tuple[PricePiece, ...]:
    """Price calls number ``n0 + 1`` .. ``n0 + k`` of a month (``n0`` already priced).

    One piece per tier the run touches, in tier order; the pieces' calls add up to ``k``.
    """
    if k < 0:
        raise ValueError(f"call count must be >= 0, got {k}")
    pieces: list[PricePiece] = []
    position, left = n0, k
    while left > 0:
        index, room = tier_room(schedule, position)
        take = left if room is None else min(left, room)
        price = schedule.tiers[index].price
        pieces.append(PricePiece(index, take, price, exact_mul(price, take)))
        position += take
        left -= take
    return tuple(pieces)


@dataclass(frozen=True, slots=True)
class MonthTotal:
    """A month's pay-as-you-go total for one account.

    ``exact`` is the sum of the exact lines; ``recorded`` is it rounded down to 3 places,
    ``charged`` rounded down to 2 (fen): what the balance is debited.
    """

    exact: Decimal
    recorded: Decimal
    charged: Decimal

    @property
    def rounding(self) -> Decimal:
        """The (non-positive) rounding line that makes exact lines add up to ``charged``."""
        return exact_sum((self.charged, -self.exact))


def month_total(amounts: Iterable[Decimal]) -> MonthTotal:
    """Total exact line amounts of one account's month; round only the total."""
    exact = exact_sum(amounts)
    return MonthTotal(exact, round_down(exact, RECORDED_PLACES), round_down(exact, CHARGED_PLACES))


def month_totals(lines: Iterable[Line]) -> dict[tuple[str, Month], MonthTotal]:
    """Pay-as-you-go totals per (account, month) over bill lines.

    Give it *every* line of the months concerned (all deduction passes): rounding a
    partial total and adding another would round twice.
    """
    amounts: dict[tuple[str, Month], list[Decimal]] = {}
    for line in lines:
        if line.kind is SourceKind.PAYG:
            amounts.setdefault((line.account, line.month), []).append(line.amount)
    return {key: month_total(values) for key, values in sorted(amounts.items())}
