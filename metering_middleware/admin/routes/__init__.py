"""The admin API's routers, one module per resource; each is made for one context."""

from collections.abc import Callable

from fastapi import APIRouter

from ..context import AdminContext
from . import accounts, balances, bills, keys, notices, plans

__all__ = ["ROUTERS"]

#: In the order the OpenAPI document lists them.
ROUTERS: tuple[Callable[[AdminContext], APIRouter], ...] = (
    accounts.router,
    keys.router,
    balances.router,
    plans.router,
    notices.router,
    bills.router,
)
