"""``python -m metering_middleware.tenant.sign ACTION URL``: a signed tenant call for curl.

Prints the headers of one V3-signed tenant-view request, a ``name: value`` a line, for
``curl -H @file URL`` (curl cannot compute an ACS3 signature itself). The AccessKey is
read from ``ALIBABA_CLOUD_ACCESS_KEY_ID`` and ``ALIBABA_CLOUD_ACCESS_KEY_SECRET`` (the
official SDKs' own variables), never from an argument; the output holds the signature,
never the secret. Each run signs a fresh nonce and the current time: the headers are
good for one request within the signature window. Exit 1 with one line on stderr when
the key is missing, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from urllib.parse import parse_qsl, unquote, urlsplit

from ..signing import sign_v3
from ._routes import API_VERSION

__all__ = ["KEY_ID_ENV", "SECRET_ENV", "main", "signed_request_headers"]

KEY_ID_ENV = "ALIBABA_CLOUD_ACCESS_KEY_ID"
SECRET_ENV = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"


def signed_request_headers(
    action: str,
    url: str,
    access_key_id: str,
    secret: str,
    *,
    method: str = "GET",
    body: bytes = b"",
    now: datetime | None = None,
) -> dict[str, str]:
    """The headers that make ``method url`` (with ``body``) a signed call of ``action``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {url!r}")
    headers = {"host": parts.netloc, "x-acs-action": action, "x-acs-version": API_VERSION}
    if body:
        headers["content-type"] = "application/json"
    query = parse_qsl(parts.query, keep_blank_values=True)
    headers |= sign_v3(
        method,
        unquote(parts.path) or "/",
        query,
        headers,
        body,
        access_key_id,
        secret,
        now=now or datetime.now(UTC),
        nonce=uuid.uuid4().hex,
    )
    return headers


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m metering_middleware.tenant.sign",
        description="Print the V3 signature headers of one tenant-view request "
        f"(for curl -H @file). The key: ${KEY_ID_ENV} and ${SECRET_ENV}.",
    )
    parser.add_argument("action", help="the endpoint's action, e.g. DescribeBalance")
    parser.add_argument("url", help="the full URL curl will request, query included")
    parser.add_argument("--data", help="a JSON object to POST (sign it, then send the same)")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = _parser().parse_args(argv)
    env = os.environ if environ is None else environ
    key_id, secret = env.get(KEY_ID_ENV), env.get(SECRET_ENV)
    if not key_id or not secret:
        print(f"error: set {KEY_ID_ENV} and {SECRET_ENV} to the tenant's key", file=sys.stderr)
        return 1
    body = b""
    if args.data is not None:
        try:
            json.loads(args.data)
        except ValueError:
            print("error: --data is not valid JSON", file=sys.stderr)
            return 2
        body = args.data.encode()
    try:
        headers = signed_request_headers(
            args.action, args.url, key_id, secret, method="POST" if body else "GET", body=body
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, value in headers.items():
        print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
