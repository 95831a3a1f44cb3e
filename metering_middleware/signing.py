"""Alibaba Cloud request signatures: V1 (HMAC-SHA1, RPC) and V3 (ACS3-HMAC-SHA256).

(Being written: the contract below is fixed, the rest is to come.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = ["SignedCall"]


@dataclass(frozen=True, slots=True)
class SignedCall:
    """Everything a signature covers, as the request arrived.

    ``params`` are, for V1, the query and form-body parameters together in
    arrival order with blank values kept (``Signature`` included); for V3, the
    query parameters only. ``headers`` has lower-cased names.
    """

    style: Literal["v1", "v3"]
    method: str
    path: str
    params: tuple[tuple[str, str], ...]
    headers: Mapping[str, str]
    body: bytes
    access_key_id: str
