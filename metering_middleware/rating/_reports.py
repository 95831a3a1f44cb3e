"""What a settlement pass reports (private; exported by :mod:`.settlement`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .months import Month

__all__ = ["SettleProgress", "SettleReport"]


@dataclass(frozen=True, slots=True)
class SettleProgress:
    """Reported after each month a pass deducts (the CLI prints it on stderr)."""

    month: Month
    records: int  # deducted in that month
    total: int  # deducted so far in the pass


@dataclass(frozen=True, slots=True)
class SettleReport:
    horizon: datetime | None  # what is settled now: records effective before it
    accounts: int  # accounts with records deducted
    records: int  # records deducted (re-rated ones included)
    adjustments: int  # records newly classified as adjustments
    deferred: int  # records past the horizon, left for a later pass
    rerated: tuple[str, ...]  # accounts re-rated from a checkpoint
