"""Rating's pure core: billing months, plans, pay-as-you-go pricing and deduction.

No I/O here: settlement (storage, the settle loop) and the CLI build on these functions.
"""

from .deduction import deduct
from .errors import DeductionError, MonthError, PlanError, RatingError
from .money import CHARGED_PLACES, RECORDED_PLACES, exact_mul, exact_sum, round_down
from .months import Month, add_months, billing_month, format_month, parse_month
from .plans import (
    DEFAULT_VALIDITY_MONTHS,
    LOW_BALANCE_SHARE,
    PlanKind,
    QpsSubscription,
    ResourcePlan,
    validate_plan,
    validate_subscription,
)
from .pricing import MonthTotal, PricePiece, month_total, month_totals, price_run, tier_room
from .results import DeductionResult, Line, SettledRun, Source, SourceKind
from .state import DeductionState, PositionKey

__all__ = [
    "CHARGED_PLACES",
    "DEFAULT_VALIDITY_MONTHS",
    "LOW_BALANCE_SHARE",
    "RECORDED_PLACES",
    "DeductionError",
    "DeductionResult",
    "DeductionState",
    "Line",
    "Month",
    "MonthError",
    "MonthTotal",
    "PlanError",
    "PlanKind",
    "PositionKey",
    "PricePiece",
    "QpsSubscription",
    "RatingError",
    "ResourcePlan",
    "SettledRun",
    "Source",
    "SourceKind",
    "add_months",
    "billing_month",
    "deduct",
    "exact_mul",
    "exact_sum",
    "format_month",
    "month_total",
    "month_totals",
    "parse_month",
    "price_run",
    "round_down",
    "tier_room",
    "validate_plan",
    "validate_subscription",
]
