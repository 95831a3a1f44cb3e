"""Which endpoint a tenant call asks for: its signed ``x-acs-action``, and its path.

The action names the endpoint (the official SDKs always send and sign it); the path is
either the tenant view's root (RPC style) or that action's own ROA path. A path of one
action under another action's name is refused, not guessed at: a request has one meaning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..errors import INVALID_ACTION, MISSING_PARAMETER, ApiError
from ..identity import INVALID_PARAMETER
from ._errors import PATH_NOT_FOUND
from ._views import View

__all__ = ["API_VERSION", "Router"]

#: The tenant view's API version (``x-acs-version``; ``Params(version=...)`` in the SDK).
API_VERSION = "2026-12-01"
_SHOW = 64


def _show(text: str) -> str:
    return text if len(text) <= _SHOW else text[:_SHOW] + "..."


def _segments(path: str) -> list[str]:
    return path.strip("/").split("/") if path.strip("/") else []


def _match(pattern: str, path: str) -> dict[str, str] | None:
    want, have = _segments(pattern), _segments(path)
    if len(want) != len(have):
        return None
    values: dict[str, str] = {}
    for w, h in zip(want, have, strict=True):
        if w.startswith("{") and w.endswith("}"):
            if not h:
                return None
            values[w[1:-1]] = h
        elif w != h:
            return None
    return values


class Router:
    """Finds the ``View`` of a call from its action, version and route path."""

    __slots__ = ("_by_action", "_views")

    def __init__(self, views: Sequence[View]) -> None:
        self._views = tuple(views)
        self._by_action = {v.action: v for v in views}

    def route(self, path: str, headers: Mapping[str, str]) -> tuple[View, dict[str, str]]:
        """``(view, path values)``; ``path`` is relative to the tenant view's mount."""
        action = headers.get("x-acs-action", "")
        if not action:
            raise ApiError(
                MISSING_PARAMETER,
                'The input parameter "x-acs-action" that is mandatory for processing this '
                "request is not supplied.",
            )
        view = self._by_action.get(action)
        if view is None:
            raise ApiError(
                INVALID_ACTION,
                f"The specified action {_show(action)} is not found: the tenant view has "
                f"{', '.join(self._by_action)}.",
            )
        version = headers.get("x-acs-version", "")
        if version != API_VERSION:
            raise ApiError(
                INVALID_ACTION,
                f"The tenant view's {action} is at version {API_VERSION}, "
                f"not {_show(version) or 'none'}.",
            )
        if not _segments(path):  # the root: RPC style, the action alone says what
            return view, {}
        for pattern in view.paths:
            values = _match(pattern, path)
            if values is not None:
                return view, values
        for other in self._views:
            if any(_match(p, path) is not None for p in other.paths):
                raise ApiError(
                    INVALID_PARAMETER,
                    f"The path {_show(path)} is {other.action}'s, not {action}'s.",
                )
        raise ApiError(
            PATH_NOT_FOUND, f"The tenant view has no path {_show(path)} (see docs/tenant.md)."
        )
