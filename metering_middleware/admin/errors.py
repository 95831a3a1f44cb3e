"""The admin API's refusals: Alibaba-style bodies with a precise ``Code``, never a traceback.

Handlers raise :class:`AdminError`; the app's exception handlers turn it, FastAPI's
validation errors (its default 422 body), unknown routes and anything unexpected into
:func:`~metering_middleware.errors.error_body` answers, with a ``RequestId`` the caller
can quote and the operator can find in the log.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from ..errors import error_body

__all__ = [
    "REQUEST_ID_HEADER",
    "AdminError",
    "ErrorBody",
    "error_response",
    "request_id",
    "validation_message",
]

#: Echoed on every answer, like VIAPI's own ``x-acs-request-id``.
REQUEST_ID_HEADER = "x-acs-request-id"


class ErrorBody(BaseModel):
    """Every 4xx and 5xx body of the admin API (the OpenAPI document names it)."""

    RequestId: str = Field(description="Quote it to the operator; it is in the log.")
    HostId: str
    Code: str = Field(description="Precise and stable: e.g. Account.NotFound, InvalidToken.")
    Message: str
    Recommend: str


@dataclass(slots=True)
class AdminError(Exception):
    """A refusal: ``status`` (4xx), ``code`` and a one-line message; nothing was written."""

    status: int
    code: str
    message: str
    recommend: str = ""
    headers: dict[str, str] | None = None

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def request_id(request: Request) -> str:
    """The request's id, made once per request (kept in its state)."""
    found = getattr(request.state, "admin_request_id", None)
    if isinstance(found, str):
        return found
    made = str(uuid.uuid4()).upper()
    request.state.admin_request_id = made
    return made


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    *,
    recommend: str = "",
    host_id: str = "metering-admin",
    headers: dict[str, str] | None = None,
) -> Response:
    rid = request_id(request)
    body, content_type = error_body(code, message, rid, host_id=host_id, recommend=recommend)
    out = {REQUEST_ID_HEADER: rid, **(headers or {})}
    return Response(body, status_code=status, media_type=content_type.decode(), headers=out)


def _where(loc: tuple[Any, ...] | list[Any]) -> str:
    """``body.amount``, ``query.limit``, ``path.account``: the field a caller must fix."""
    return ".".join(str(p) for p in loc) or "request"


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str]:
    """(Code, Message) for pydantic/FastAPI validation errors: the first one decides.

    ``MalformedJSON`` for a body that is not JSON, ``MissingParameter`` for a missing field,
    ``InvalidParameter`` for the rest (wrong type, out of range, unknown field)."""
    if not errors:
        return "InvalidParameter", "the request is not valid"
    first = errors[0]
    kind = str(first.get("type", ""))
    where = _where(first.get("loc", ()))
    if kind == "json_invalid":
        ctx = first.get("ctx") or {}
        return "MalformedJSON", f"the body is not valid JSON: {ctx.get('error', 'parse error')}"
    if kind == "missing":
        return "MissingParameter", f"{where} is required"
    if kind == "extra_forbidden":
        return "InvalidParameter", f"{where} is not a known field"
    msg = str(first.get("msg", "is not valid"))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return "InvalidParameter", f"{where}: {msg}{more}"
