"""Signed V3 requests made with the project's signer, for raw-HTTP tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from metering_middleware.signing import sign_v3


def v3_headers(
    key: str,
    secret: str,
    body: bytes,
    *,
    action: str = "DetectFace",
    extra: dict[str, str] | None = None,
    now: datetime | None = None,
) -> dict[str, str]:
    """A signed V3 facebody request's headers, signed at ``now`` (default: the real time)."""
    headers = {
        "host": "facebody.cn-shanghai.aliyuncs.com",
        "x-acs-action": action,
        "x-acs-version": "2019-12-30",
        "content-type": "application/x-www-form-urlencoded",
        **(extra or {}),
    }
    headers.update(
        sign_v3(
            "POST",
            "/",
            [],
            headers,
            body,
            key,
            secret,
            now=now or datetime.now(UTC),
            nonce=uuid.uuid4().hex,
        )
    )
    return headers
