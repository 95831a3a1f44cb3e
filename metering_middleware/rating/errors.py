"""Errors the rating core raises; all are ``ValueError``s that name the bad input."""

from __future__ import annotations

__all__ = ["DeductionError", "MonthError", "PlanError", "RatingError"]


class RatingError(ValueError):
    """Input the rating core cannot rate."""


class MonthError(RatingError):
    """A billing month that does not exist or cannot be parsed."""


class PlanError(RatingError):
    """A resource plan or QPS subscription that is not valid (or not valid for the catalog)."""


class DeductionError(RatingError):
    """Calls, plans or state that cannot be deducted together (unknown item, no price...)."""
