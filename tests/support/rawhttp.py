"""One HTTP/1.1 request with the exact bytes given: no client normalises its target.

httpx (like every client) cleans a request target (``//``, ``/./``, ``..``) and
joins repeated headers its own way; path and header tricks need the raw bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["RawResponse", "raw_request"]


@dataclass(frozen=True, slots=True)
class RawResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name.lower()), None)


async def raw_request(
    base_url: str,
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
) -> RawResponse:
    """Send ``method target`` to ``base_url`` (``http://host:port``) on a fresh connection."""
    url = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        lines = [f"{method} {target} HTTP/1.1"]
        names = {k.lower() for k, _ in headers}
        if "host" not in names:
            lines.append(f"Host: {url.netloc}")
        lines += [f"{k}: {v}" for k, v in headers]
        if body and "content-length" not in names:
            lines.append(f"Content-Length: {len(body)}")
        lines.append("Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = tuple(
        (k.strip().lower(), v.strip()) for k, _, v in (h.partition(":") for h in header_lines)
    )
    if any(k == "transfer-encoding" and "chunked" in v for k, v in parsed):
        rest = _dechunk(rest)
    return RawResponse(int(status_line.split()[1]), parsed, rest)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out
