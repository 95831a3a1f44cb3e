"""Keyset pagination for the admin API's lists: ``limit`` and an opaque ``cursor``.

A cursor names the last item of the page it ends (its sort key), never an offset: an
item inserted before it does not shift the next page, one inserted after it is on a later
page. It is signed (HMAC-SHA256 with a key derived from the admin tokens) and bound to the
list it came from, so a garbled, edited or foreign cursor is a 400 ``InvalidCursor``
instead of a page of something else.
"""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query

from .errors import AdminError

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "CursorQuery",
    "Cursors",
    "LimitQuery",
    "Page",
    "page_of",
]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

_T = TypeVar("_T")
Key = tuple[str | int, ...]

LimitQuery = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description=f"Items per page (1..{MAX_LIMIT}).")
]
CursorQuery = Annotated[
    str | None,
    Query(max_length=2048, description="`next_cursor` of the previous page; none: the first."),
]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Cursors:
    """Makes and reads cursors with one key (``AdminTokens.derive_key('cursor')``)."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _tag(self, listing: str, body: bytes) -> bytes:
        return hmac.new(self._key, listing.encode() + b"\0" + body, sha256).digest()[:16]

    def make(self, listing: str, key: Key) -> str:
        body = json.dumps(list(key), separators=(",", ":")).encode()
        return f"{_b64(body)}.{_b64(self._tag(listing, body))}"

    def read(self, listing: str, cursor: str | None) -> Key | None:
        """The key a cursor names, None for no cursor; ``AdminError`` 400 for a bad one."""
        if cursor is None:
            return None
        try:
            body_text, tag_text = cursor.split(".")
            body, tag = _unb64(body_text), _unb64(tag_text)
        except ValueError:  # binascii.Error is a ValueError
            raise _bad() from None
        if not hmac.compare_digest(tag, self._tag(listing, body)):
            raise _bad()
        try:
            value = json.loads(body)
        except ValueError:
            raise _bad() from None
        if not isinstance(value, list) or not all(
            isinstance(v, str | int) and not isinstance(v, bool) for v in value
        ):
            raise _bad()
        return tuple(value)


def _bad() -> AdminError:
    return AdminError(
        400,
        "InvalidCursor",
        "cursor is not one this list gave out (garbled, edited, from another list, or "
        "from before a token rotation)",
        recommend="start again without a cursor",
    )


@dataclass(frozen=True, slots=True)
class Page(Generic[_T]):
    items: list[_T]
    next_cursor: str | None


def page_of(
    items: Sequence[_T],
    key: Callable[[_T], Key],
    *,
    cursors: Cursors,
    listing: str,
    cursor: str | None,
    limit: int,
) -> Page[_T]:
    """The page after ``cursor`` of ``items`` (sorted by ``key`` here, ascending)."""
    after = cursors.read(listing, cursor)
    ordered = sorted(items, key=key)
    if after is not None:
        ordered = [i for i in ordered if _cmp_key(key(i)) > _cmp_key(after)]
    chosen = ordered[:limit]
    more = len(ordered) > limit
    return Page(chosen, cursors.make(listing, key(chosen[-1])) if more else None)


def _cmp_key(key: Key) -> tuple[tuple[int, Any], ...]:
    # Ints before strings at one position: a forged mix cannot raise TypeError (the tag
    # already rules it out, this keeps comparisons total anyway).
    return tuple((0, v) if isinstance(v, int) else (1, v) for v in key)
