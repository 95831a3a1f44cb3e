"""A tenant call's parameters: the query, a JSON object or form body, the path's values.

Every parameter is named by the endpoint or refused: a caller learns at once that a
parameter it thought meaningful is not (``InvalidParameter``), and one naming an account
(``Account``, ``AccountId``, ``tenant``, ...) is refused with its own code: the account
is always the AccessKey's, never the caller's word, and a silent "ignored" would let a
client believe it read another account's data. A name given twice (query and body, or
twice in the query) must carry the same value.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import ApiError
from ..identity import INVALID_PARAMETER, UNSIGNED_BODY, parse_params
from ._errors import ACCOUNT_NOT_ACCEPTED

__all__ = ["read_params"]

_FORM = "application/x-www-form-urlencoded"
_JSON = "application/json"
#: Words that, in a parameter's name, say "whose data": refused outright.
_OWNER_WORDS = ("account", "tenant", "owner", "aliuid", "callerid", "userid")
_SHOW = 64


def _show(text: str) -> str:
    return text if len(text) <= _SHOW else text[:_SHOW] + "..."


def _names_an_owner(name: str) -> bool:
    folded = "".join(c for c in name.lower() if c.isalnum())
    return folded == "uid" or any(word in folded for word in _OWNER_WORDS)


class _Object(list[tuple[str, Any]]):
    """A JSON object's members in order, duplicates kept (so they can be refused)."""


def _scalar(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    kind = "an object" if isinstance(value, _Object) else "an array"
    raise ApiError(
        INVALID_PARAMETER,
        f'The parameter "{_show(name)}" must be a string or a number, not {kind}.',
    )


def _body_params(content_type: str | None, body: bytes) -> list[tuple[str, str]]:
    if not body:
        return []
    media = (content_type or "").partition(";")[0].strip().lower()
    if media == _FORM:
        return parse_params(body, "form body")
    if media == _JSON:
        try:
            doc = json.loads(body, object_pairs_hook=_Object)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise ApiError(INVALID_PARAMETER, "The request body is not valid JSON.") from None
        if not isinstance(doc, _Object):
            raise ApiError(INVALID_PARAMETER, "The JSON request body must be an object.")
        # A member given twice must agree, like a parameter given twice (read_params).
        return [(k, _scalar(k, v)) for k, v in doc if v is not None]
    raise ApiError(
        UNSIGNED_BODY,
        f"A {_show(media) or 'untyped'} body is not read: send parameters in the query, "
        "as a JSON object (application/json) or as a form.",
    )


def read_params(
    action: str,
    accepted: Iterable[str],
    query: Iterable[tuple[str, str]],
    content_type: str | None,
    body: bytes,
    path_values: Mapping[str, str],
) -> dict[str, str]:
    """The parameters of one call by name; raises ``ApiError`` as the module says."""
    allowed = frozenset(accepted)
    found: dict[str, str] = {}
    for name, value in [*query, *_body_params(content_type, body), *path_values.items()]:
        if _names_an_owner(name):
            raise ApiError(
                ACCOUNT_NOT_ACCEPTED,
                f"The tenant view serves only the account of the calling AccessKey: it takes "
                f'no "{_show(name)}" parameter.',
            )
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise ApiError(
                INVALID_PARAMETER,
                f'{action} takes no parameter "{_show(name)}" (it takes: {known}).',
            )
        if found.setdefault(name, value) != value:
            raise ApiError(
                INVALID_PARAMETER, f'The parameter "{name}" is given twice with different values.'
            )
    return found
