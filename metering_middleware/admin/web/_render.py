"""The page's Jinja2 environment: every template escaped, all of them read once, up front.

Autoescaping is on for every template whatever its name (``autoescape=True``, not a list
of extensions), and undefined names fail loudly. The templates and the stylesheet are read
from the package when the app is built, so no request ever touches the file system.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from importlib.resources import files
from typing import Any

import jinja2

from ...clock import BEIJING
from ...rating.plans import LOW_BALANCE_SHARE

__all__ = ["Templates"]

_TEMPLATES = (
    "base.html",
    "_chart.html",
    "signin.html",
    "accounts.html",
    "account.html",
    "refund.html",
    "message.html",
)


def _when(value: datetime | None) -> str:
    """An instant in Beijing time, where billing months and days are cut."""
    if value is None:
        return "—"
    return value.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M") + " UTC+8"


def _source(line: Any) -> str:
    """A bill line's source as the CLI's bill names it (reports' ``DeductionLine``)."""
    if line.source == "payg":
        tier = "" if line.tier is None else f" tier {line.tier + 1}"
        price = "" if line.unit_price is None else f" @ {line.unit_price}"
        return f"payg{tier}{price}"
    if line.plan_id:
        return f"{line.source} plan {line.plan_id}"
    return str(line.source)


def _share(plan: Any, width: int) -> str:
    """The width of a plan's points-left bar (0 for a plan without points)."""
    if not plan.points:
        return "0"
    left = max(Decimal(0), min(plan.points_left or Decimal(0), plan.points))
    return f"{width * left / plan.points:.1f}"


def _low_mark(plan: Any) -> str:
    """The 20% mark of a plan: at or below it the low-points notice is sent."""
    return format((plan.points * LOW_BALANCE_SHARE).normalize(), "f")


class Templates:
    __slots__ = ("_env", "css")

    def __init__(self) -> None:
        folder = files(__package__ or __name__).joinpath("templates")
        sources = {name: folder.joinpath(name).read_text("utf-8") for name in _TEMPLATES}
        self.css = folder.joinpath("style.css").read_text("utf-8").strip()
        self._env = jinja2.Environment(
            loader=jinja2.DictLoader(sources),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.filters.update(when=_when, source=_source, share=_share, low_mark=_low_mark)

    def render(self, name: str, **context: Any) -> str:
        return self._env.get_template(name).render(css=self.css, **context)
