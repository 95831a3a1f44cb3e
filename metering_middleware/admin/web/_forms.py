"""Reading the page's own form posts: URL-encoded, small, each field once.

The page's forms are plain ``application/x-www-form-urlencoded`` posts of a few short
fields; parsing them here (``urllib.parse``) spares the ``python-multipart`` dependency
that Starlette's ``Request.form()`` needs, and bounds what a post may make us read.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

__all__ = ["MAX_FORM_BYTES", "FormError", "read_form"]

MAX_FORM_BYTES = 8 * 1024
_MAX_FIELDS = 16


class FormError(ValueError):
    """A post that is not one of the page's forms."""


async def read_form(request: Request) -> dict[str, str]:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise FormError("a form post is application/x-www-form-urlencoded")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormError(f"a form post is at most {MAX_FORM_BYTES} bytes")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=_MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise FormError("an undecodable form post") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise FormError(f"the field {name!r} is given twice")
        fields[name] = value
    return fields
