"""Alibaba Cloud request signatures: V1 (HMAC-SHA1, RPC) and V3 (ACS3-HMAC-SHA256).

Pure functions that match the official SDKs byte for byte (``aliyunsdkcore``'s
``rpc_signature_composer`` for V1, ``alibabacloud_openapi_util``'s
``get_authorization`` for V3), plus ``SignatureVerifier``, the request path's
check: timestamp window, then signature, then nonce. The nonce is claimed last
so a forged request cannot burn a nonce a genuine one will use.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import quote

from .clock import Clock, utc_from_timestamp
from .errors import (
    INVALID_TIMESTAMP,
    MISSING_PARAMETER,
    SIGNATURE_MISMATCH,
    SIGNATURE_NONCE_USED,
    ApiError,
)
from .nonces import NonceStore

__all__ = [
    "V3_ALGORITHM",
    "SignatureVerifier",
    "SignedCall",
    "V3Authorization",
    "extract_nonce",
    "extract_signed_at",
    "extract_timestamp",
    "parse_v3_authorization",
    "percent_encode",
    "sign_v1",
    "sign_v1_params",
    "sign_v3",
    "v1_string_to_sign",
    "v3_canonical_request",
]

V3_ALGORITHM = "ACS3-HMAC-SHA256"
_V3_PREFIX = V3_ALGORITHM + " "
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# Headers every V3 signature must cover: the host names the category (what is
# charged), the rest make the timestamp, nonce and body hash unforgeable.
_V3_REQUIRED = ("host", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256")
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*").fullmatch
_PATH_SAFE = re.compile(r"[A-Za-z0-9_.~/-]*").fullmatch
_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


# Not ``frozen``: made on every call, and a frozen dataclass sets each field through
# ``object.__setattr__`` (about twice the plain assignments). Never changed once made.
@dataclass(slots=True, unsafe_hash=True)
class V3Authorization:
    access_key_id: str
    signed_headers: tuple[str, ...]
    signature: str


# Not ``frozen``: made on every call, and a frozen dataclass sets each field through
# ``object.__setattr__`` (about twice the plain assignments). Never changed once made.
@dataclass(slots=True, unsafe_hash=True)
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
    #: V3: ``parse_v3_authorization(headers["authorization"])`` when whoever built the
    #: call (the identity resolver) parsed it already; the verifier then reuses it
    #: instead of parsing the header a second time. ``None``: the verifier parses.
    authorization: V3Authorization | None = field(default=None, compare=False, repr=False)


def percent_encode(s: str) -> str:
    """RFC 3986 encoding as Alibaba uses it: only ``A-Z a-z 0-9 - _ . ~`` stay.

    Space becomes ``%20`` and ``*`` ``%2A`` (what the SDK's ``quote_plus`` +
    replacements amount to). Lone surrogates are encoded rather than refused so
    the function is total; no genuine client can produce them.
    """
    if _UNRESERVED(s):  # the common case (names, dates, ids) skips quote()
        return s
    return quote(s, safe="~", errors="surrogatepass")


def _pairs(params: Iterable[tuple[str, str]] | Mapping[str, str]) -> list[tuple[str, str]]:
    return list(params.items()) if isinstance(params, Mapping) else list(params)


def _canonical_query(pairs: list[tuple[str, str]]) -> str:
    # Sorted by raw name (then value, for repeated names) as the SDKs do.
    pairs.sort()
    pe = percent_encode
    return "&".join([f"{pe(k)}={pe(v)}" for k, v in pairs])


# --- V1 -------------------------------------------------------------------------------------


def _reencode(query: str) -> str:
    # percent_encode() of an already-encoded query: only '%', '=' and '&' are left to encode.
    return query.replace("%", "%25").replace("=", "%3D").replace("&", "%26")


def v1_string_to_sign(method: str, params: Iterable[tuple[str, str]] | Mapping[str, str]) -> str:
    """``METHOD&%2F&<encoded sorted k=v>`` over every parameter but ``Signature``."""
    pairs = [(k, v) for k, v in _pairs(params) if k != "Signature"]
    return f"{method}&%2F&{_reencode(_canonical_query(pairs))}"


# --- HMAC over keyed states -----------------------------------------------------------------

_BLOCK = 64  # SHA-1's and SHA-256's block size, in bytes
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))
#: (digest name, key) -> the inner and outer hash states after the padded key (RFC 2104).
#: ``hmac.digest`` sets up two OpenSSL contexts from the key on every call (~26k
#: instructions here, the largest single cost of a V3 check); copying the keyed states
#: is ~15k. A key is a secret the credential cache holds anyway; bounded, cleared when full.
_KEYED: dict[tuple[str, bytes], tuple[hashlib._Hash, hashlib._Hash]] = {}
_KEYED_SIZE = 1024


def _hmac(name: str, key: bytes, message: bytes) -> bytes:
    """``hmac.digest(key, message, name)`` for ``sha1`` and ``sha256``, from cached states."""
    states = _KEYED.get((name, key))
    if states is None:
        new = hashlib.sha1 if name == "sha1" else hashlib.sha256
        padded = (new(key).digest() if len(key) > _BLOCK else key).ljust(_BLOCK, b"\0")
        states = (new(padded.translate(_IPAD)), new(padded.translate(_OPAD)))
        if len(_KEYED) >= _KEYED_SIZE:
            _KEYED.clear()
        _KEYED[(name, key)] = states
    inner = states[0].copy()
    inner.update(message)
    outer = states[1].copy()
    outer.update(inner.digest())
    return outer.digest()


def _hmac_sha1_b64(string_to_sign: str, secret: str) -> str:
    digest = _hmac("sha1", (secret + "&").encode(), string_to_sign.encode())
    return base64.b64encode(digest).decode()


def sign_v1(method: str, params: Iterable[tuple[str, str]] | Mapping[str, str], secret: str) -> str:
    """The base64 HMAC-SHA1 signature, keyed by ``secret + "&"``."""
    return _hmac_sha1_b64(v1_string_to_sign(method, params), secret)


_V1_OWN = frozenset(
    (
        "AccessKeyId",
        "Signature",
        "SignatureMethod",
        "SignatureNonce",
        "SignatureVersion",
        "Timestamp",
    )
)


def sign_v1_params(
    method: str,
    params: Iterable[tuple[str, str]] | Mapping[str, str],
    access_key_id: str,
    secret: str,
    *,
    now: datetime,
    nonce: str,
) -> list[tuple[str, str]]:
    """``params`` plus the signing parameters and ``Signature``, ready to send.

    Signing parameters already in ``params`` are replaced. The caller puts the
    result in the query or the form body: V1 signs both alike.
    """
    out = [(k, v) for k, v in _pairs(params) if k not in _V1_OWN]
    out += [
        ("AccessKeyId", access_key_id),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", nonce),
        ("Timestamp", now.astimezone(UTC).strftime(_TIMESTAMP_FORMAT)),
    ]
    out.append(("Signature", sign_v1(method, out, secret)))
    return out


# --- V3 -------------------------------------------------------------------------------------


def parse_v3_authorization(value: str) -> V3Authorization:
    """Parse ``ACS3-HMAC-SHA256 Credential=..,SignedHeaders=a;b,Signature=..``.

    Raises ``ValueError`` (and nothing else) on anything malformed.
    """
    if not isinstance(value, str) or not value.startswith(_V3_PREFIX):
        raise ValueError(f"Authorization is not {V3_ALGORITHM}")
    parts = value[len(_V3_PREFIX) :].split(",")
    if (  # what the SDKs send, parsed without the general loop
        len(parts) == 3
        and parts[0].startswith("Credential=")
        and parts[1].startswith("SignedHeaders=")
        and parts[2].startswith("Signature=")
    ):
        credential, signed, signature = parts[0][11:], parts[1][14:], parts[2][10:]
    else:
        credential, signed, signature = _parse_v3_parts(parts)
    if not credential or not signature:
        raise ValueError("Credential and Signature must not be empty")
    headers = tuple(signed.split(";"))
    if "" in headers or signed != signed.lower() or signed != signed.strip():
        raise ValueError("SignedHeaders must be lower-case names separated by ';'")
    return V3Authorization(credential, headers, signature)


def _parse_v3_parts(parts: list[str]) -> tuple[str, str, str]:
    found: dict[str, str] = {}
    for part in parts:
        name, eq, val = part.strip().partition("=")
        if not eq or name not in ("Credential", "SignedHeaders", "Signature") or name in found:
            raise ValueError(f"unexpected or repeated Authorization part {part.strip()[:40]!r}")
        found[name] = val
    if len(found) != 3:
        raise ValueError("Authorization needs Credential, SignedHeaders and Signature")
    return found["Credential"], found["SignedHeaders"], found["Signature"]


def _canonical_uri(path: str) -> str:
    # ``path`` is the decoded path (ASGI ``scope["path"]``); encoded as the SDK encodes.
    if path == "/" or not path:
        return "/"
    return path if _PATH_SAFE(path) else quote(path, safe="/~", errors="surrogatepass")


def v3_canonical_request(
    method: str,
    path: str,
    query_params: Iterable[tuple[str, str]] | Mapping[str, str],
    headers: Mapping[str, str],
    signed_headers: Iterable[str],
    hashed_payload: str,
) -> str:
    """The canonical request; ``headers`` has lower-case names and holds every signed one."""
    signed = list(signed_headers)
    canon_headers = "".join([f"{h}:{headers[h].strip()}\n" for h in signed])
    return (
        f"{method}\n{_canonical_uri(path)}\n{_canonical_query(_pairs(query_params))}\n"
        f"{canon_headers}\n{';'.join(signed)}\n{hashed_payload}"
    )


def _v3_signature(canonical_request: str, secret: str) -> str:
    digest = hashlib.sha256(canonical_request.encode("utf-8", "surrogatepass")).hexdigest()
    string_to_sign = f"{V3_ALGORITHM}\n{digest}"
    return _hmac("sha256", secret.encode(), string_to_sign.encode()).hex()


def sign_v3(
    method: str,
    path: str,
    query_params: Iterable[tuple[str, str]] | Mapping[str, str],
    headers: Mapping[str, str],
    body: bytes,
    access_key_id: str,
    secret: str,
    *,
    now: datetime,
    nonce: str,
) -> dict[str, str]:
    """The headers to set so a request carries a fresh V3 signature.

    Signs ``host``, ``content-type`` (when present) and every ``x-acs-*`` header
    of ``headers``: the set a verifier insists on, and none a proxy's HTTP client
    may rewrite on the way (user-agent, accept-encoding, content-length).
    """
    lower = {k.lower(): v for k, v in headers.items()}
    if "host" not in lower:
        raise ValueError("sign_v3 needs the host header")
    added = {
        "x-acs-date": now.astimezone(UTC).strftime(_TIMESTAMP_FORMAT),
        "x-acs-signature-nonce": nonce,
        "x-acs-content-sha256": hashlib.sha256(body).hexdigest(),
    }
    lower.update(added)
    signed = sorted(h for h in lower if h in ("host", "content-type") or h.startswith("x-acs-"))
    canonical = v3_canonical_request(
        method, path, query_params, lower, signed, added["x-acs-content-sha256"]
    )
    added["authorization"] = (
        f"{V3_ALGORITHM} Credential={access_key_id},SignedHeaders={';'.join(signed)},"
        f"Signature={_v3_signature(canonical, secret)}"
    )
    return added


# --- verification ---------------------------------------------------------------------------


def _mismatch(message: str) -> ApiError:
    return ApiError(SIGNATURE_MISMATCH, message)


def _missing(name: str) -> ApiError:
    return ApiError(
        MISSING_PARAMETER,
        f'The input parameter "{name}" that is mandatory for processing this request '
        "is not supplied.",
    )


def _param(call: SignedCall, name: str) -> str | None:
    for k, v in call.params:
        if k == name:
            return v
    return None


#: Parsed timestamps: every call signed in the same second carries the same text,
#: and both the verifier and the nonce claim need it. Bounded: cleared when full.
_TIMESTAMPS: dict[str, float] = {}
_TIMESTAMPS_SIZE = 256


def _parse_timestamp(text: str) -> float:
    """Epoch seconds of ``YYYY-MM-DDThh:mm:ss[.fff]Z``; raise ``ApiError`` if malformed."""
    seconds = _TIMESTAMPS.get(text)
    if seconds is not None:
        return seconds
    try:
        if len(text) < 20 or text[10] != "T" or text[-1] != "Z":
            raise ValueError
        seconds = datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ApiError(
            INVALID_TIMESTAMP,
            f"Specified timestamp {text[:40]!r} is not in the format YYYY-MM-DDThh:mm:ssZ (UTC).",
        ) from None
    if len(_TIMESTAMPS) >= _TIMESTAMPS_SIZE:
        _TIMESTAMPS.clear()
    _TIMESTAMPS[text] = seconds
    return seconds


def _timestamp_text(call: SignedCall) -> str:
    if call.style == "v3":
        found = call.headers.get("x-acs-date")
        name = "x-acs-date"
    else:
        found = _param(call, "Timestamp")
        name = "Timestamp"
    if not found:
        raise _missing(name)
    return found


def extract_timestamp(call: SignedCall) -> datetime:
    """The time the caller signed at (V1 ``Timestamp``, V3 ``x-acs-date``)."""
    return utc_from_timestamp(extract_signed_at(call))


def extract_signed_at(call: SignedCall) -> float:
    """``extract_timestamp`` as epoch seconds (what nonce expiry is computed from)."""
    return _parse_timestamp(_timestamp_text(call))


def extract_nonce(call: SignedCall) -> str:
    """The signature nonce (V1 ``SignatureNonce``, V3 ``x-acs-signature-nonce``)."""
    if call.style == "v3":
        found, name = call.headers.get("x-acs-signature-nonce"), "x-acs-signature-nonce"
    else:
        found, name = _param(call, "SignatureNonce"), "SignatureNonce"
    if not found:
        raise _missing(name)
    return found


def _same(expected: str, given: str) -> bool:
    # compare_digest refuses non-ASCII str; a non-ASCII signature is simply wrong.
    return given.isascii() and hmac.compare_digest(expected, given)


class SignatureVerifier:
    """Checks one call: timestamp window, then signature, then claims the nonce."""

    __slots__ = ("_clock", "_nonces", "_window")

    def __init__(self, nonces: NonceStore, clock: Clock, *, window_seconds: float = 900) -> None:
        self._nonces = nonces
        self._clock = clock
        self._window = window_seconds

    @property
    def nonces(self) -> NonceStore:
        """Where ``verify`` claims nonces (a ``DeferredNonceStore`` when the limiter does)."""
        return self._nonces

    async def verify(self, call: SignedCall, secret: str) -> None:
        """Return if the call is genuine and fresh; else raise ``ApiError``."""
        signed_at = self.check(call, secret)
        nonce = extract_nonce(call)
        if not await self._nonces.claim(call.access_key_id, nonce, signed_at + self._window):
            raise ApiError(
                SIGNATURE_NONCE_USED,
                "Specified signature nonce was used already within the time window.",
            )

    def check(self, call: SignedCall, secret: str) -> float:
        """Everything ``verify`` checks but the nonce claim, at once (no await): the
        meter's fast path, where the limiter claims the nonce. Returns the signing time."""
        signed_at = _parse_timestamp(_timestamp_text(call))
        if abs(self._clock.time() - signed_at) > self._window:
            raise ApiError(
                INVALID_TIMESTAMP,
                "Specified time stamp or date value is expired: more than "
                f"{self._window:g} seconds away from the server's time.",
            )
        extract_nonce(call)  # a call without one is refused before its signature is checked
        if call.style == "v3":
            _verify_v3(call, secret)
        else:
            _verify_v1(call, secret)
        return signed_at


def _verify_v1(call: SignedCall, secret: str) -> None:
    given: str | None = None
    signed: list[tuple[str, str]] = []
    method = key_id = None
    for k, v in call.params:
        if k == "Signature":
            if given is not None:
                raise _mismatch("Signature is given more than once.")
            given = v
            continue
        signed.append((k, v))
        if k == "SignatureMethod":
            method = v
        elif k == "AccessKeyId":
            key_id = v
    if not given:
        raise _mismatch("The request carries no Signature.")
    if method != "HMAC-SHA1":
        raise _mismatch(f"Unsupported SignatureMethod {method!r}: only HMAC-SHA1 is accepted.")
    if key_id != call.access_key_id:
        raise _mismatch("AccessKeyId does not match the key the request was identified by.")
    string_to_sign = f"{call.method}&%2F&{_reencode(_canonical_query(signed))}"
    if not _same(_hmac_sha1_b64(string_to_sign, secret), given):
        raise _mismatch(
            "Specified signature is not matched with our calculation. "
            f"server string to sign is:{string_to_sign}"
        )


def _verify_v3(call: SignedCall, secret: str) -> None:
    # Kept to plain loops and one join: this runs on every V3 call (~7 us here).
    headers = call.headers
    auth = call.authorization
    if auth is None:
        value = headers.get("authorization")
        if value is None:
            raise _mismatch("The request carries no Authorization header.")
        try:
            auth = parse_v3_authorization(value)
        except ValueError as exc:
            raise _mismatch(f"Malformed Authorization header: {exc}.") from None
    if auth.access_key_id != call.access_key_id:
        raise _mismatch("Credential does not match the key the request was identified by.")
    signed = auth.signed_headers
    for name in _V3_REQUIRED:
        if name not in signed:
            raise _mismatch(f"SignedHeaders must include {name}.")
    for name in headers:
        if (name.startswith("x-acs-") or name == "content-type") and name not in signed:
            raise _mismatch(f"SignedHeaders must include {name}, present in the request.")
    try:
        canon_headers = "".join([f"{h}:{headers[h].strip()}\n" for h in signed])
    except KeyError as exc:
        raise _mismatch(f"Signed header {exc.args[0]} is missing from the request.") from None
    claimed = headers["x-acs-content-sha256"].strip()
    actual = hashlib.sha256(call.body).hexdigest() if call.body else _EMPTY_SHA256
    if claimed.lower() != actual:
        raise _mismatch(
            "Content hash mismatch: x-acs-content-sha256 is not the SHA-256 of the request body."
        )
    # The payload line is the header's text, as the client hashed it into its canonical request.
    query = _canonical_query(list(call.params)) if call.params else ""
    canonical = (
        f"{call.method}\n{_canonical_uri(call.path)}\n{query}\n"
        f"{canon_headers}\n{';'.join(signed)}\n{claimed}"
    )
    if not _same(_v3_signature(canonical, secret), auth.signature):
        raise _mismatch(
            "The request signature does not conform to Aliyun standards. "
            f"server canonical request is:{canonical}"
        )
