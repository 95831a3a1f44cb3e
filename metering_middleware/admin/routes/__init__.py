"""The admin API's routes, one module per resource, each added to the app for one context.

Added straight to the app (not through an included ``APIRouter``), so every route is one of
``app.routes`` and carries the app-wide bearer dependency.
"""

from collections.abc import Callable

from fastapi import FastAPI

from ..context import AdminContext
from . import accounts, balances, keys, notices, plans, reports

__all__ = ["REGISTRARS"]

#: In the order the OpenAPI document lists them.
REGISTRARS: tuple[Callable[[FastAPI, AdminContext], None], ...] = (
    accounts.register,
    keys.register,
    balances.register,
    plans.register,
    notices.register,
    reports.register,
)
