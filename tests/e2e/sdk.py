"""Calls through Alibaba Cloud's official SDKs (blocking: run them in a thread)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SdkResult:
    ok: bool
    code: str | None
    status: int | None
    request_id: str | None


def detect_face_v3(endpoint: str, key: str, secret: str, image_url: str) -> SdkResult:
    from alibabacloud_facebody20191230 import models
    from alibabacloud_facebody20191230.client import Client
    from alibabacloud_tea_openapi import models as open_api
    from alibabacloud_tea_util import models as util
    from Tea.exceptions import TeaException

    client = Client(
        open_api.Config(
            access_key_id=key,
            access_key_secret=secret,
            endpoint=endpoint,
            protocol="http",
            region_id="cn-shanghai",
        )
    )
    try:
        response = client.detect_face_with_options(
            models.DetectFaceRequest(image_url=image_url), util.RuntimeOptions()
        )
    except TeaException as exc:
        data = exc.data if isinstance(exc.data, dict) else {}
        return SdkResult(False, exc.code, data.get("statusCode"), data.get("RequestId"))
    return SdkResult(True, None, response.status_code, response.body.request_id)


def call_v1(
    endpoint: str,
    key: str,
    secret: str,
    image_url: str,
    *,
    action: str = "DetectFace",
    method: str = "GET",
    fmt: str = "JSON",
    form: bool = False,
) -> SdkResult:
    import json

    from aliyunsdkcore.acs_exception.exceptions import ServerException
    from aliyunsdkcore.client import AcsClient
    from aliyunsdkcore.request import CommonRequest

    client = AcsClient(key, secret, "cn-shanghai")
    request = CommonRequest(domain=endpoint, version="2019-12-30", action_name=action)
    request.set_protocol_type("http")
    request.set_method(method)
    request.set_accept_format(fmt)
    if form:
        request.add_body_params("ImageURL", image_url)
    else:
        request.add_query_param("ImageURL", image_url)
    try:
        body = client.do_action_with_exception(request)
    except ServerException as exc:
        return SdkResult(False, exc.get_error_code(), exc.get_http_status(), exc.get_request_id())
    request_id = json.loads(body)["RequestId"] if fmt == "JSON" else None
    return SdkResult(True, None, 200, request_id)
