"""What the upstream did: its error code, its request id, and whether the call is charged.

Pure and defensive: the inputs are whatever came back over the wire (possibly
compressed, truncated where the client went away, mislabelled by a proxy, or
plain garbage), so every function here returns ``None`` rather than raise.

Choices (billing rules, section 1):

- Only the documented shapes are read: a JSON object's **top-level** ``Code``
  (case-sensitive; a ``Code`` nested under ``Data`` may echo anything and must
  not decide a charge) and XML ``<Error><Code>`` as a direct child of the root
  ``Error`` element (namespace prefixes ignored). The first ``Code`` wins.
  A code that is not a string, is empty, or is longer than 128 characters is
  no code.
- Truncated bodies still yield the code when it arrived before the break:
  VIAPI sends ``Code`` near the start, and a call the upstream answered with a
  chargeable code is charged even if the body breaks off afterwards.
- ``content_type`` picks the parser when it names JSON or XML; if that parser
  finds nothing and the first byte says the body is the other format, the other
  one is tried (proxies rewrite content types).
- XML is read with expat, with any ``<!DOCTYPE`` refused outright: without a
  DTD no entity can be declared, so nothing can expand (billion laughs) or be
  fetched. ``xml.etree`` is not used: older expat builds expand internal
  entities without a limit and it cannot return a partial result from a
  truncated body.
- Decompression is bounded: more than ``MAX_DECODED`` bytes (1 MiB) out of one
  body is a bomb, and the answer is ``None``.
"""

from __future__ import annotations

import contextlib
import json
import re
import zlib
from xml.parsers import expat

from .errors import DEFAULT_CHARGEABLE_CODES

__all__ = [
    "DEFAULT_CHARGEABLE_CODES",
    "MAX_DECODED",
    "ErrorBodyTee",
    "ErrorBodyUnreadable",
    "decode_body",
    "is_chargeable",
    "parse_error_code",
    "read_error_code",
    "sniff_request_id",
]

MAX_DECODED = 1 << 20
_MAX_CODE = 128
_MAX_CODINGS = 4  # stacked Content-Encodings; more is not a real server
_SNIFF = 1024

_GZIP_WBITS = 47  # gzip or zlib, auto-detected: servers mislabel the two
_ZLIB_WBITS = 15
_RAW_WBITS = -15


def _inflate(data: bytes, wbits: int, cap: int, prefix: bool) -> bytes | None:
    """Decompress at most ``cap`` bytes; ``None`` on a broken stream, and on a
    bomb (more than ``cap`` bytes) unless only a ``prefix`` is wanted.

    A stream that merely stops early (a truncated body) gives what it had.
    Concatenated gzip members (allowed by RFC 1952) are all read.
    """
    out: list[bytes] = []
    size = 0
    while True:
        d = zlib.decompressobj(wbits)
        try:
            chunk = d.decompress(data, cap + 1 - size)
        except zlib.error:
            return None if not out else b"".join(out)
        size += len(chunk)
        out.append(chunk)
        if size > cap:
            return b"".join(out)[:cap] if prefix else None
        data = d.unused_data
        if not d.eof or not data or wbits != _GZIP_WBITS:
            return b"".join(out)


def _decode_one(data: bytes, coding: str, cap: int, prefix: bool) -> bytes | None:
    if coding in ("identity", ""):
        return data
    if coding in ("gzip", "x-gzip"):
        return _inflate(data, _GZIP_WBITS, cap, prefix)
    if coding == "deflate":
        # RFC 9110 says zlib-wrapped; some servers send raw deflate. A zlib
        # header check fails at once on raw data, so try it first.
        if len(data) >= 2 and (data[0] * 256 + data[1]) % 31 == 0 and data[0] & 0x0F == 8:
            inflated = _inflate(data, _ZLIB_WBITS, cap, prefix)
            if inflated is not None:
                return inflated
        return _inflate(data, _RAW_WBITS, cap, prefix)
    return None


def decode_body(
    body: bytes,
    content_encoding: str | None = None,
    *,
    cap: int = MAX_DECODED,
    prefix: bool = False,
) -> bytes | None:
    """``body`` with its ``Content-Encoding`` undone, at most ``cap`` bytes.

    ``None`` for an unknown coding, a broken stream, or more than ``cap``
    decoded bytes (a bomb) unless ``prefix`` asks for just the first ``cap``.
    """
    if not content_encoding:
        return body[:cap]
    codings = [c.strip().lower() for c in content_encoding.split(",")]
    if len(codings) > _MAX_CODINGS:
        return None
    data: bytes | None = body
    for coding in reversed(codings):  # listed in the order they were applied
        assert data is not None
        data = _decode_one(data, coding, cap, prefix)
        if data is None:
            return None
    return data[:cap] if data is not None else None


_WS = re.compile(r"[ \t\n\r]+")
_DECODER = json.JSONDecoder()


def _skip(text: str, i: int) -> int:
    m = _WS.match(text, i)
    return m.end() if m else i


def _valid_code(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if 0 < len(value) <= _MAX_CODE else None


def _json_code(data: bytes) -> str | None:
    """The top-level ``Code`` of a JSON object, read key by key.

    Walking the object (instead of ``json.loads``) keeps every key read before
    a truncation point, and stops as soon as ``Code`` is found.
    """
    text = data.decode("utf-8", "replace").lstrip("\ufeff")
    try:
        i = _skip(text, 0)
        if text[i : i + 1] != "{":
            return None
        i += 1
        while True:
            i = _skip(text, i)
            if text[i : i + 1] != '"':
                return None
            key, i = _DECODER.raw_decode(text, i)
            i = _skip(text, i)
            if text[i : i + 1] != ":":
                return None
            i = _skip(text, i + 1)
            value, i = _DECODER.raw_decode(text, i)
            if key == "Code":
                return _valid_code(value)
            i = _skip(text, i)
            if text[i : i + 1] != ",":
                return None
            i += 1
    except (ValueError, RecursionError):
        return None


class _Stop(Exception):
    """Ends an expat parse early: found, refused, or not an error document."""


def _xml_code(data: bytes) -> str | None:
    """The text of ``<Error><Code>``; the DTD is refused, so no entity expands."""
    parser = expat.ParserCreate()
    depth = 0
    capturing = False
    parts: list[str] = []
    found: list[str] = []

    def start(name: str, _attrs: object) -> None:
        nonlocal depth, capturing
        depth += 1
        local = name.rpartition(":")[2]
        if depth == 1 and local != "Error":
            raise _Stop
        if depth == 2 and local == "Code":
            capturing = True

    def end(_name: str) -> None:
        nonlocal depth
        if capturing and depth == 2:
            found.append("".join(parts))
            raise _Stop
        depth -= 1

    def text(chunk: str) -> None:
        if capturing and depth == 2:
            parts.append(chunk)

    def refuse(*_args: object) -> None:
        raise _Stop

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    # isfinal=False: a truncated body is not an error, just an early end.
    with contextlib.suppress(_Stop, expat.ExpatError, ValueError, RecursionError):
        parser.Parse(data, False)
    return _valid_code(found[0]) if found else None


def _sniff(data: bytes) -> str | None:
    head = data[:64].lstrip(b" \t\r\n")
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:].lstrip(b" \t\r\n")
    if head.startswith(b"{"):
        return "json"
    if head.startswith(b"<"):
        return "xml"
    return None


def _by_type(content_type: str | None) -> str | None:
    if not content_type:
        return None
    media = content_type.partition(";")[0].lower()
    if "json" in media:
        return "json"
    if "xml" in media:
        return "xml"
    return None


class ErrorBodyUnreadable(Exception):
    """A parser failed in a way no input should cause (a bug): the cause is chained.

    Not-an-error-body (garbage, truncation, bombs, DTDs) is ``None``, not this.
    The request path still treats the call as free, the safe default, but counts
    it apart (``parse_error``) so a parser bug shows in metrics, not as lost revenue.
    """


def parse_error_code(
    body: bytes, *, content_encoding: str | None = None, content_type: str | None = None
) -> str | None:
    """The Alibaba error code in an (error) response body, or ``None``. Never raises."""
    try:
        return read_error_code(body, content_encoding=content_encoding, content_type=content_type)
    except ErrorBodyUnreadable:
        return None


def read_error_code(
    body: bytes, *, content_encoding: str | None = None, content_type: str | None = None
) -> str | None:
    """``parse_error_code``, but an unexpected parser failure raises ``ErrorBodyUnreadable``."""
    try:
        data = decode_body(body, content_encoding)
        if not data:
            return None
        sniffed = _sniff(data)
        first = _by_type(content_type) or sniffed
        if first is None:
            return None
        code = _json_code(data) if first == "json" else _xml_code(data)
        if code is None and sniffed is not None and sniffed != first:
            code = _json_code(data) if sniffed == "json" else _xml_code(data)
        return code
    except Exception as exc:  # garbage is handled above: this is a parser bug
        raise ErrorBodyUnreadable(f"{type(exc).__name__}: {exc}") from exc


_JSON_RID = re.compile(rb'"RequestId"\s*:\s*"([A-Za-z0-9._:\-]{1,128})"')
_XML_RID = re.compile(rb"<(?:[\w.\-]+:)?RequestId(?:\s[^>]*)?>\s*([A-Za-z0-9._:\-]{1,128})\s*<")


def sniff_request_id(first_bytes: bytes, *, content_encoding: str | None = None) -> str | None:
    """The ``RequestId`` in the first KiB of a (success) body, JSON or XML. Never raises.

    Only the prefix is read (the id is usually the first or second key); the
    ``x-acs-request-id`` header is the other place to look. An id with
    characters outside ``[A-Za-z0-9._:-]`` is not trusted.
    """
    try:
        head = decode_body(first_bytes[: 16 * _SNIFF], content_encoding, cap=_SNIFF, prefix=True)
        if not head:
            return None
        head = head[:_SNIFF]
        match = _JSON_RID.search(head) or _XML_RID.search(head)
        return match.group(1).decode("ascii") if match else None
    except Exception:  # a prefix of garbage must never break the request path
        return None


class ErrorBodyTee:
    """A bounded copy of a streamed body: the first ``limit`` bytes, and whether more came."""

    __slots__ = ("_chunks", "_size", "limit", "overflowed")

    def __init__(self, limit: int = 65536) -> None:
        self.limit = limit
        self.overflowed = False
        self._chunks: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes | bytearray) -> None:  # a mutable chunk is copied
        room = self.limit - self._size
        if len(chunk) > room:
            self.overflowed = True
            chunk = chunk[: max(room, 0)]
        if chunk:
            self._chunks.append(bytes(chunk))
            self._size += len(chunk)

    @property
    def size(self) -> int:
        return self._size

    @property
    def data(self) -> bytes:
        if len(self._chunks) > 1:
            self._chunks = [b"".join(self._chunks)]
        return self._chunks[0] if self._chunks else b""


def is_chargeable(status: int, code: str | None, chargeable_codes: frozenset[str]) -> bool:
    """HTTP 200 is charged; otherwise only a chargeable error code, whatever the status."""
    return status == 200 or (code is not None and code in chargeable_codes)
