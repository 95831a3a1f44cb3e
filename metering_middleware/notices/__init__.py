"""Notices: what an operator or a tenant must hear about (a plan running low or expiring,
a low balance, an account overdue, suspended or restored, a spend cap reached).

Each is recorded once (its id is deterministic: what it is about), in the ledger's file,
with a webhook delivery owed in the same transaction (the outbox), so none is lost across
a restart. See docs/notices.md.

Modules beyond these (imported by path, as they need rating): ``detectors`` (what
settlement's results call for), ``recorder`` (emit from the request path), ``delivery``
(the webhook sender), ``outbox`` (its rows).
"""

from .model import Notice, NoticeKind, cap_notice, notice_id
from .records import LOGGER_NAME, record_notice
from .signing import WebhookVerificationError, sign, signature_headers, verify

__all__ = [
    "LOGGER_NAME",
    "Notice",
    "NoticeKind",
    "WebhookVerificationError",
    "cap_notice",
    "notice_id",
    "record_notice",
    "sign",
    "signature_headers",
    "verify",
]
