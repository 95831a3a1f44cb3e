"""Webhook signatures in the Standard Webhooks (Svix) scheme, for senders and receivers.

Each delivery carries three headers:

- ``webhook-id``: the notice's id (the same on every retry: receivers dedupe on it);
- ``webhook-timestamp``: when this attempt was signed, integer Unix seconds;
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256(key, f"{id}.{timestamp}.{body}")>``,
  possibly several space-separated (a receiver accepts any one that matches).

The key is the secret's bytes: a secret written ``whsec_<base64>`` (the Standard Webhooks
form) is the base64-decoded remainder, any other secret its UTF-8 bytes. The timestamp is
signed too, so a receiver that refuses timestamps more than ``tolerance`` seconds from its
clock (5 minutes by default) refuses replays of old deliveries.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

__all__ = [
    "DEFAULT_TOLERANCE",
    "WebhookVerificationError",
    "secret_key",
    "sign",
    "signature_headers",
    "verify",
]

#: Seconds a receiver accepts between the signed timestamp and its own clock.
DEFAULT_TOLERANCE = 300
_PREFIX = "whsec_"


class WebhookVerificationError(ValueError):
    """A delivery whose headers or signature do not check out (the message says which)."""


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret: ``whsec_<base64>`` decoded, otherwise its UTF-8 bytes."""
    if secret.startswith(_PREFIX):
        try:
            return base64.b64decode(secret[len(_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("a whsec_ secret must be base64 after its prefix") from None
    return secret.encode("utf-8")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` and the base64 HMAC-SHA256 of
    ``{msg_id}.{timestamp}.{body}``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> str:
    """Check a delivery as a receiver would; returns its ``webhook-id`` (dedupe on it).

    ``headers`` keys are matched case-insensitively; ``body`` is the raw request body,
    exactly as received (parsed and dumped again, JSON would not match). Raises
    :class:`WebhookVerificationError` for a missing header, a timestamp outside
    ``tolerance`` seconds of ``now`` (default: this machine's clock), or no matching
    ``v1`` signature. Comparison is constant-time.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lower["webhook-id"]
        stamp = lower["webhook-timestamp"]
        signatures = lower["webhook-signature"]
    except KeyError as exc:
        raise WebhookVerificationError(f"missing header {exc.args[0]}") from None
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not integer seconds") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError("webhook-timestamp is outside the tolerance")
    expected = sign(secret, msg_id, timestamp, body).partition(",")[2]
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected.encode()):
            return msg_id
    raise WebhookVerificationError("no matching v1 signature")
