"""Alibaba-style error answers.

Every refusal the gateway makes looks like one VIAPI would make: a JSON (or
XML, when the caller asked ``Format=XML``) body with ``RequestId``, ``HostId``,
``Code``, ``Message`` and ``Recommend``, so official SDKs surface a precise
``Code`` instead of a parse error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from xml.sax.saxutils import escape

__all__ = [
    "ACCOUNT_ARREARAGE",
    "ACCOUNT_DISABLED",
    "BODY_TOO_LARGE",
    "DEFAULT_CHARGEABLE_CODES",
    "INVALID_ACCESS_KEY_ID",
    "INVALID_ACTION",
    "INVALID_TIMESTAMP",
    "MISSING_PARAMETER",
    "SERVICE_UNAVAILABLE",
    "SIGNATURE_MISMATCH",
    "SIGNATURE_NONCE_USED",
    "SPEND_CAP_EXCEEDED",
    "ApiError",
    "ErrorKind",
    "error_body",
]

#: VIAPI's error codes that are charged whatever the HTTP status (a 200 always is): the
#: default of ``MeteringConfig.chargeable_codes``. Here, on the floor of the settings
#: (docs/architecture.md), so the settings need not import the answer reader (outcome.py).
DEFAULT_CHARGEABLE_CODES = frozenset({"InvalidImage.NotFoundFace"})


@dataclass(frozen=True, slots=True)
class ErrorKind:
    code: str
    status: int
    #: Short reason label used in counters and metrics (``refused:<reason>``).
    reason: str


INVALID_ACCESS_KEY_ID = ErrorKind("InvalidAccessKeyId.NotFound", 404, "unknown_key")
ACCOUNT_DISABLED = ErrorKind("InvalidAccessKeyId.Inactive", 403, "disabled_key")
SIGNATURE_MISMATCH = ErrorKind("SignatureDoesNotMatch", 400, "bad_signature")
INVALID_TIMESTAMP = ErrorKind("InvalidTimeStamp.Expired", 400, "bad_timestamp")
SIGNATURE_NONCE_USED = ErrorKind("SignatureNonceUsed", 400, "nonce_reused")
INVALID_ACTION = ErrorKind("InvalidAction.NotFound", 400, "unknown_action")
MISSING_PARAMETER = ErrorKind("MissingParameter", 400, "bad_request")
BODY_TOO_LARGE = ErrorKind("RequestEntityTooLarge", 413, "body_too_large")
HEADERS_TOO_LARGE = ErrorKind("RequestHeaderFieldsTooLarge", 431, "headers_too_large")
SERVICE_UNAVAILABLE = ErrorKind("ServiceUnavailable", 503, "ledger_unavailable")
#: An overdue, suspended or held account (code and status configurable; VIAPI itself
#: answers ``InvalidApi.ForbiddenInvoke`` 400). Each refusal names its own reason.
ACCOUNT_ARREARAGE = ErrorKind("Account.Arrearage", 403, "overdue")
#: A pay-as-you-go call refused by the spend guard or a monthly cap (configurable too).
SPEND_CAP_EXCEEDED = ErrorKind("Account.SpendCapExceeded", 403, "spend_guard")


class ApiError(Exception):
    """A refusal with an Alibaba error code; never charged."""

    def __init__(self, kind: ErrorKind, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.reason = reason or kind.reason

    @property
    def code(self) -> str:
        return self.kind.code

    @property
    def status(self) -> int:
        return self.kind.status


def error_body(
    code: str,
    message: str,
    request_id: str,
    *,
    xml: bool = False,
    host_id: str = "metering-gateway",
    recommend: str = "",
) -> tuple[bytes, bytes]:
    """The body and its content type for an error answer."""
    if xml:
        parts = (
            ("RequestId", request_id),
            ("HostId", host_id),
            ("Code", code),
            ("Message", message),
            ("Recommend", recommend),
        )
        inner = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in parts)
        text = f'<?xml version="1.0" encoding="UTF-8"?><Error>{inner}</Error>'
        return text.encode(), b"text/xml;charset=utf-8"
    doc = {
        "RequestId": request_id,
        "HostId": host_id,
        "Code": code,
        "Message": message,
        "Recommend": recommend,
    }
    return json.dumps(doc, ensure_ascii=False).encode(), b"application/json;charset=utf-8"
