"""Who is calling, which action, which category: read from the raw ASGI request.

Pure and cheap (it runs on every call): headers are decoded once, the catalog
lookups the request path needs are precomputed when the resolver is built, and
any input that cannot be identified is refused with an ``ApiError`` carrying an
Alibaba-style code, never with another exception.

Two request styles (billing rules, section 2):

- **V3**: an ``Authorization: ACS3-HMAC-SHA256 Credential=<AK>,...`` header; the
  action and version come from ``x-acs-action`` / ``x-acs-version``.
- **RPC, signature V1**: everything else; ``Action``, ``Version``,
  ``AccessKeyId`` and ``Signature`` come from the query and, for
  ``application/x-www-form-urlencoded`` bodies, the form, in arrival order with
  blank values kept (an empty ``SignatureType=`` is signed too).

Choices the billing rules leave open:

- A missing ``AccessKeyId`` is answered ``MissingParameter`` naming it (as for
  the other mandatory parameters), not ``InvalidAccessKeyId.NotFound``: nothing
  was looked up, and the caller learns exactly what to fix.
- Query or form text that is not valid percent-encoded UTF-8, an identifying
  parameter given twice with different values, or several ``Host`` headers are
  refused with ``InvalidParameter`` (400): billing one action while the upstream
  might read another is never acceptable.
- RPC callers get XML error answers unless ``Format`` is ``JSON`` (any case):
  XML is VIAPI's RPC default, so an unknown ``Format`` keeps the default.

What the upstream could read as the call, the meter reads too, or refuses
(``UnsupportedMediaType``, 415, or ``InvalidParameter``), so the action billed
is the only action an upstream can find:

- A body is a form only under the media type ``application/x-www-form-urlencoded``
  (any case, parameters allowed, a ``charset`` only if UTF-8); several
  ``Content-Type`` headers are refused.
- V1: a non-empty body that is not such a form is refused: its signature would
  not cover it.
- V3: a body whose media type names a form of another kind is refused (an
  upstream might read it as one); ``Action``/``Version`` in the query or the
  form must equal the ``x-acs-action``/``x-acs-version`` headers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote_to_bytes

from .catalog import BillableItem, Catalog
from .errors import INVALID_ACTION, MISSING_PARAMETER, ApiError, ErrorKind
from .signing import SignedCall, V3Authorization, parse_v3_authorization

__all__ = [
    "INVALID_PARAMETER",
    "UNSIGNED_BODY",
    "CallIdentity",
    "IdentityResolver",
    "decode_headers",
    "is_form",
    "parse_params",
    "wants_xml",
]

#: Malformed input (bad encoding, conflicting duplicates). Kept here, not in
#: ``errors``, because only identification refuses with it.
INVALID_PARAMETER = ErrorKind("InvalidParameter", 400, "bad_request")
#: A body the meter does not read as parameters but an upstream might.
UNSIGNED_BODY = ErrorKind("UnsupportedMediaType", 415, "unsigned_body")

_V3_ALGORITHM = "ACS3-HMAC-SHA256"
_FORM = "application/x-www-form-urlencoded"
#: Parameters that name the call: each may repeat only with the same value.
_V1_KEYS = frozenset({"AccessKeyId", "Action", "Version", "Signature", "Format"})
_SHOW = 64  # longest caller text echoed in a message


# Not ``frozen``: made on every call, and a frozen dataclass sets each field through
# ``object.__setattr__`` (about twice the plain assignments). Never changed once made.
@dataclass(slots=True, unsafe_hash=True)
class CallIdentity:
    """The caller, its API and everything its signature covers."""

    style: Literal["v1", "v3"]
    access_key_id: str
    action: str
    version: str
    category: str
    item: BillableItem
    #: Error answers to this caller should be XML (RPC without ``Format=JSON``).
    wants_xml: bool
    signed: SignedCall
    #: The query's parameters, in arrival order.
    query: tuple[tuple[str, str], ...] = ()
    #: V1: the form body's parameters (none unless the body is a form the meter
    #: read). V3: none (the signed body is forwarded as it is).
    form: tuple[tuple[str, str], ...] = ()


def _show(text: str) -> str:
    """Caller text for a message: bounded, so a huge parameter cannot bloat answers."""
    return text if len(text) <= _SHOW else text[:_SHOW] + "..."


#: Raw header name -> lower-cased text. The same dozen names come on every call;
#: bounded (cleared when full) since a client may send any names it likes.
_NAMES: dict[bytes, str] = {}
_NAMES_SIZE = 512


_NAME_LENGTH = 64  # longer names are decoded each time, never kept


def _name(raw: bytes) -> str:
    name = raw.lower().decode("latin-1")
    if len(raw) <= _NAME_LENGTH:
        if len(_NAMES) >= _NAMES_SIZE:
            _NAMES.clear()
        _NAMES[raw] = name
    return name


def decode_headers(raw: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    """Raw ASGI headers as ``{lower-cased name: value}``; duplicates joined with ``,``.

    Latin-1 never fails and maps bytes one to one, so the values are exactly
    the bytes that were signed.
    """
    names = _NAMES.get
    out = {(names(name) or _name(name)): value.decode("latin-1") for name, value in raw}
    if len(out) == len(raw):  # no repeated name: the common case, one pass
        return out
    out = {}
    for name, value in raw:
        key = names(name) or _name(name)
        text = value.decode("latin-1")
        previous = out.get(key)
        out[key] = text if previous is None else f"{previous},{text}"
    return out


#: Decoded names and short values (Action, Version, AccessKeyId, Format, the
#: signature method...) repeat on nearly every call; percent-decoding them
#: again each time was most of a V1 resolve. Long or unique values (nonce,
#: signature, URLs) are not kept, and the cache is bounded.
_DECODED: dict[bytes, str] = {}
_CACHE_NAME = 64
_CACHE_VALUE = 24
_CACHE_SIZE = 4096


def _unquote(raw: bytes, where: str, keep: int) -> str:
    # ``+`` is a space in both query strings and form bodies; the SDKs send a
    # literal plus as %2B, so this matches what they signed.
    data = unquote_to_bytes(raw.replace(b"+", b" ")) if b"%" in raw or b"+" in raw else raw
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(
            INVALID_PARAMETER, f"The {where} is not valid percent-encoded UTF-8."
        ) from None
    if len(raw) <= keep:
        if len(_DECODED) >= _CACHE_SIZE:
            _DECODED.clear()
        _DECODED[raw] = text
    return text


def parse_params(raw: bytes, where: str = "query string") -> list[tuple[str, str]]:
    """``a=1&b=&c`` as ``[("a", "1"), ("b", ""), ("c", "")]``, in arrival order.

    Blank values are kept (they are signed); empty pieces (``&&``) are skipped
    as every URL parser does. Raises ``ApiError(INVALID_PARAMETER)`` on text
    that does not decode to UTF-8.
    """
    out: list[tuple[str, str]] = []
    if not raw:
        return out
    cached = _DECODED.get
    for piece in raw.split(b"&"):
        if piece:
            name, _, value = piece.partition(b"=")
            # ``or``: a cached "" is falsy and simply decoded again.
            out.append(
                (
                    cached(name) or _unquote(name, where, _CACHE_NAME),
                    cached(value) or _unquote(value, where, _CACHE_VALUE),
                )
            )
    return out


def _is_form_type(content_type: str | None) -> bool:
    if not content_type:
        return False
    return content_type.partition(";")[0].strip().lower() == _FORM


def _read_form(content_type: str | None, body: bytes, style: str) -> bool:
    """Whether ``body`` is a form whose parameters are read; refuses what is ambiguous.

    One reading for the meter and the gateway: whatever the upstream could take
    for the call's parameters is either read here or refused.
    """
    if content_type is None:
        media = ""
    else:
        if "," in content_type:  # several headers, joined by decode_headers
            raise ApiError(INVALID_PARAMETER, "The request has several Content-Type headers.")
        media, _, options = content_type.partition(";")
        media = media.strip().lower()
        if media == _FORM and options:
            for option in options.split(";"):
                name, _, value = option.partition("=")
                charset = value.strip().strip('"').lower()
                if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
                    raise ApiError(
                        UNSIGNED_BODY, f"A form body must be UTF-8, not {_show(charset)}."
                    )
    if not body:
        return False
    if media == _FORM:
        return True
    if style == "v1":
        raise ApiError(
            UNSIGNED_BODY,
            "An RPC (signature V1) call's body must be application/x-www-form-urlencoded: "
            f"its signature does not cover a {_show(media) or 'untyped'} body.",
        )
    if "form" in media:
        raise ApiError(
            UNSIGNED_BODY,
            f"A {_show(media)} body is not read as parameters: send a form as "
            "application/x-www-form-urlencoded.",
        )
    return False


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    """One header from raw ASGI headers, repeated ones joined as ``decode_headers`` does."""
    values = [v.decode("latin-1") for k, v in headers if k.lower() == name]
    return ",".join(values) if values else None


def is_form(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """Whether the body is a form whose parameters are part of a V1 call (raw headers)."""
    return _is_form_type(_header(headers, b"content-type"))


def _format_wants_xml(fmt: str | None) -> bool:
    return fmt is None or fmt.upper() != "JSON"


def _scan_format(raw: bytes) -> str | None:
    """The first ``Format`` value in url-encoded text; lenient, never raises."""
    for piece in raw.split(b"&"):
        name, _, value = piece.partition(b"=")
        if b"%" in name or b"+" in name:
            name = unquote_to_bytes(name.replace(b"+", b" "))
        if name == b"Format":
            return unquote_to_bytes(value.replace(b"+", b" ")).decode("utf-8", "replace")
    return None


def wants_xml(
    query_string: bytes, headers: Sequence[tuple[bytes, bytes]], body: bytes = b""
) -> bool:
    """Whether an error answer should be XML; usable when resolution itself failed.

    V3 callers never get XML; RPC callers do unless ``Format`` (query, or form
    ``body`` when given) is ``JSON``. Never raises.
    """
    # The same reading of the headers as ``resolve``, so both always agree.
    auth = _header(headers, b"authorization")
    if auth is not None and auth.startswith(_V3_ALGORITHM):
        return False
    fmt = _scan_format(query_string)
    if fmt is None and body and is_form(headers):
        fmt = _scan_format(body)
    return _format_wants_xml(fmt)


#: V3 parameters that name the call (which the headers already name).
_V3_NAMED = frozenset({"Action", "Version"})


def _agree(key: str, value: str, action: str, version: str) -> None:
    if value != (action if key == "Action" else version):
        raise ApiError(
            INVALID_PARAMETER,
            f'The parameter "{key}" disagrees with the x-acs-{key.lower()} header.',
        )


def _scan_v3_form(body: bytes, action: str, version: str) -> None:
    """Refuse a V3 form naming another call; only the names are decoded, values if named."""
    cached = _DECODED.get
    for piece in body.split(b"&"):
        if piece:
            raw_name, _, raw_value = piece.partition(b"=")
            name = cached(raw_name) or _unquote(raw_name, "form body", _CACHE_NAME)
            if name in _V3_NAMED:
                value = cached(raw_value) or _unquote(raw_value, "form body", _CACHE_VALUE)
                _agree(name, value, action, version)


def _missing(name: str) -> ApiError:
    return ApiError(
        MISSING_PARAMETER,
        f'The input parameter "{name}" that is mandatory for processing this request '
        "is not supplied.",
    )


def _no_action(name: str) -> ApiError:
    # A request naming no action cannot be identified as a VIAPI call at all.
    return ApiError(
        INVALID_ACTION,
        f'The request names no VIAPI action (no "{name}"): it cannot be identified.',
    )


def _conflict(name: str) -> ApiError:
    return ApiError(
        INVALID_PARAMETER, f'The parameter "{name}" is given twice with different values.'
    )


def _v3_credentials(auth: str) -> tuple[str, str, V3Authorization | None]:
    """``(access_key_id, signature, parsed)`` from an ACS3 ``Authorization`` value.

    The usual well-formed header is parsed once, by the verifier's own parser, and
    the result travels with the call so the verifier does not parse it again.
    Anything else is read leniently here ("" if absent) and left for the verifier
    to refuse, so which error a malformed header gets does not change.
    """
    try:
        parsed = parse_v3_authorization(auth)
    except ValueError:
        pass
    else:
        key_id, signature = parsed.access_key_id, parsed.signature
        # The lenient reading strips blanks around values; the strict one keeps them.
        if key_id == key_id.strip() and signature == signature.strip():
            return key_id, signature, parsed
    key_id, signature = _lenient_v3_credentials(auth)
    return key_id, signature, None


def _lenient_v3_credentials(auth: str) -> tuple[str, str]:
    found: dict[str, str] = {}
    for part in auth[len(_V3_ALGORITHM) :].split(","):
        key, sep, value = part.strip().partition("=")
        if sep and key in ("Credential", "Signature"):
            value = value.strip()
            if found.setdefault(key, value) != value:
                raise _conflict(f"{key} (Authorization header)")
    return found.get("Credential", ""), found.get("Signature", "")


class IdentityResolver:
    """Turns a raw request into a ``CallIdentity`` against one catalog.

    ``category_overrides`` maps ``(action, version)`` to the category to use when
    the catalog has that pair in several categories and the host does not say
    which (for example ``GetAsyncJobResult`` 2019-12-30: ocr and imageseg).
    A mapping naming an API the catalog lacks is refused here with ``ValueError``.
    """

    __slots__ = ("_by_api", "_by_pair", "_categories", "_pairs", "_versions")

    def __init__(
        self, catalog: Catalog, *, category_overrides: Mapping[tuple[str, str], str] = {}
    ) -> None:
        self._categories = catalog.categories
        self._by_api: dict[tuple[str, str], BillableItem] = {
            (it.category, it.action): it for it in catalog.items
        }
        versions: dict[str, set[str]] = {}
        for it in catalog.items:
            versions.setdefault(it.action, set()).add(it.version)
        self._versions = {a: tuple(sorted(v)) for a, v in versions.items()}
        self._pairs = {
            (it.action, it.version): catalog.categories_for(it.action, it.version)
            for it in catalog.items
        }
        # (action, version) -> item, for pairs the catalog (or an override) settles.
        by_pair: dict[tuple[str, str], BillableItem] = {}
        for pair, cats in self._pairs.items():
            if len(cats) == 1:
                by_pair[pair] = self._by_api[(cats[0], pair[0])]
        for (action, version), category in category_overrides.items():
            item = self._by_api.get((category, action))
            if item is None or item.version != version:
                raise ValueError(
                    f"category override {action} {version} -> {category}: "
                    "the catalog has no such API"
                )
            by_pair[(action, version)] = item
        self._by_pair = by_pair

    def resolve(
        self,
        method: str,
        path: str,
        query_string: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
    ) -> CallIdentity:
        """Identify one request; raises only ``ApiError``."""
        hdrs = decode_headers(headers)
        auth = hdrs.get("authorization")
        if auth is not None and auth.startswith(_V3_ALGORITHM):
            return self._resolve_v3(method, path, query_string, hdrs, body, auth)
        return self._resolve_v1(method, path, query_string, hdrs, body)

    def _resolve_v3(
        self,
        method: str,
        path: str,
        query_string: bytes,
        hdrs: dict[str, str],
        body: bytes,
        auth: str,
    ) -> CallIdentity:
        access_key_id, signature, parsed = _v3_credentials(auth)
        if not access_key_id:
            raise _missing("AccessKeyId (Credential= in the Authorization header)")
        action = hdrs.get("x-acs-action", "")
        if not action:
            raise _no_action("x-acs-action")
        version = hdrs.get("x-acs-version", "")
        if not version:
            raise _missing("x-acs-version")
        if not signature:
            raise _missing("Signature (in the Authorization header)")
        item = self._item(action, version, hdrs)
        params = tuple(parse_params(query_string)) if query_string else ()
        # The headers name the call; a parameter naming another would be a second
        # meaning for an upstream that reads parameters. (The body is forwarded as
        # signed, so a V3 form is only scanned for the two names, not kept.)
        for key, value in params:
            if key in _V3_NAMED:
                _agree(key, value, action, version)
        if _read_form(hdrs.get("content-type"), body, "v3"):
            _scan_v3_form(body, action, version)
        signed = SignedCall("v3", method, path, params, hdrs, body, access_key_id, parsed)
        return CallIdentity(
            "v3", access_key_id, action, version, item.category, item, False, signed, params
        )

    def _resolve_v1(
        self,
        method: str,
        path: str,
        query_string: bytes,
        hdrs: dict[str, str],
        body: bytes,
    ) -> CallIdentity:
        query = parse_params(query_string)
        form = (
            parse_params(body, "form body")
            if _read_form(hdrs.get("content-type"), body, "v1")
            else []
        )
        params = query + form if form else query
        found: dict[str, str] = {}
        for key, value in params:
            if key in _V1_KEYS and found.setdefault(key, value) != value:
                raise _conflict(key)
        if not found.get("Action"):
            raise _no_action("Action")
        for name in ("AccessKeyId", "Version", "Signature"):
            if not found.get(name):
                raise _missing(name)
        access_key_id = found["AccessKeyId"]
        action = found["Action"]
        version = found["Version"]
        item = self._item(action, version, hdrs)
        signed = SignedCall("v1", method, path, tuple(params), hdrs, body, access_key_id)
        return CallIdentity(
            "v1",
            access_key_id,
            action,
            version,
            item.category,
            item,
            _format_wants_xml(found.get("Format")),
            signed,
            tuple(query),
            tuple(form),
        )

    def _item(self, action: str, version: str, hdrs: Mapping[str, str]) -> BillableItem:
        host = hdrs.get("host")
        if host:
            if "," in host:
                raise ApiError(INVALID_PARAMETER, "The request has several Host headers.")
            label = host.partition(".")[0].partition(":")[0].lower()
            if label in self._categories:
                return self._in_category(label, action, version)
        item = self._by_pair.get((action, version))
        if item is not None:
            return item
        cats = self._pairs.get((action, version))
        if cats:
            raise ApiError(
                INVALID_ACTION,
                f"The action {_show(action)} at version {_show(version)} exists in several "
                f"categories ({', '.join(cats)}): call it on its category's host "
                "(<category>.<region>.aliyuncs.com) or configure a category mapping.",
            )
        known = self._versions.get(action)
        if known:
            raise ApiError(
                INVALID_ACTION,
                f"The action {_show(action)} has no version {_show(version)} "
                f"(known: {', '.join(known)}).",
            )
        raise ApiError(INVALID_ACTION, f"The specified action {_show(action)} is not found.")

    def _in_category(self, category: str, action: str, version: str) -> BillableItem:
        item = self._by_api.get((category, action))
        if item is None:
            raise ApiError(
                INVALID_ACTION,
                f"The specified action {_show(action)} is not found in category {category}.",
            )
        if item.version != version:
            raise ApiError(
                INVALID_ACTION,
                f"The action {action} of category {category} is at version {item.version}, "
                f"not {_show(version)}.",
            )
        return item
