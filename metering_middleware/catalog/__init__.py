"""The billable items: categories, actions, prices, coefficients, QPS."""

from .loader import CatalogError, default_catalog, load_catalog, parse_catalog
from .model import BillableItem, Catalog, PriceSchedule, Tier, Unit

__all__ = [
    "BillableItem",
    "Catalog",
    "CatalogError",
    "PriceSchedule",
    "Tier",
    "Unit",
    "default_catalog",
    "load_catalog",
    "parse_catalog",
]
