"""The official SDK's generic ``call_api`` against the tenant view (blocking: use a thread)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metering_middleware.tenant import API_VERSION


@dataclass(frozen=True)
class SdkAnswer:
    status: int
    body: dict[str, Any]  # the answer (200) or the error document the SDK parsed
    code: str | None  # the error's Code, None on success


def call_api(
    endpoint: str,
    key: str,
    secret: str,
    action: str,
    *,
    pathname: str = "/tenant/",
    method: str = "GET",
    style: str = "ROA",
    query: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
) -> SdkAnswer:
    """One call as a tenant makes it: ``Client.call_api`` with ``Params``, AK auth, V3."""
    from alibabacloud_tea_openapi import models as open_api_models
    from alibabacloud_tea_openapi.client import Client
    from alibabacloud_tea_openapi.exceptions import AlibabaCloudException
    from alibabacloud_tea_util.models import RuntimeOptions

    client = Client(
        open_api_models.Config(
            access_key_id=key, access_key_secret=secret, endpoint=endpoint, protocol="http"
        )
    )
    params = open_api_models.Params(
        action=action,
        version=API_VERSION,
        protocol="HTTP",
        pathname=pathname,
        method=method,
        auth_type="AK",
        style=style,
        req_body_type="json",
        body_type="json",
    )
    request = open_api_models.OpenApiRequest(query=query, body=body)
    try:
        answer = client.call_api(params, request, RuntimeOptions())
    except AlibabaCloudException as exc:
        return SdkAnswer(exc.status_code or 0, dict(exc.data or {}), exc.code)
    return SdkAnswer(answer["statusCode"], answer["body"], None)
