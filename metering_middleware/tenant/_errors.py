"""The tenant view's own refusals, beside the meter's (``errors``), which it reuses.

Only what the meter has no code for is new here: a signature the tenant view does not
take (V1, or none), a request naming another account, a path or plan it does not have.
"""

from __future__ import annotations

from ..errors import ErrorKind

__all__ = [
    "ACCOUNT_NOT_ACCEPTED",
    "METHOD_NOT_ALLOWED",
    "PATH_NOT_FOUND",
    "PLAN_NOT_FOUND",
    "UNSUPPORTED_SIGNATURE",
]

#: A V1 (HMAC-SHA1) or other non-V3 signature: the tenant view takes ACS3-HMAC-SHA256 only,
#: whose signature covers the path, the body's hash and the headers (V1 covers none).
UNSUPPORTED_SIGNATURE = ErrorKind("UnsupportedSignatureVersion", 400, "bad_signature")
#: The request names an account: the account is the AccessKey's, never the caller's word.
ACCOUNT_NOT_ACCEPTED = ErrorKind("InvalidParameter.Account", 400, "bad_request")
PATH_NOT_FOUND = ErrorKind("InvalidAction.NotFound", 404, "unknown_action")
METHOD_NOT_ALLOWED = ErrorKind("MethodNotAllowed", 405, "bad_request")
#: Also the answer for another account's plan id: "not yours" and "no such plan" are one.
PLAN_NOT_FOUND = ErrorKind("InvalidPlanId.NotFound", 404, "unknown_plan")
