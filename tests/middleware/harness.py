"""Driving the middleware as an ASGI server would, without sockets.

The fake upstream is a plain ASGI app; the "client" is the ``send`` callable,
so a test can look at the ledger at the exact moment a byte reaches it.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from starlette.types import Message, Receive, Scope, Send

from metering_middleware import ManualClock, MeteringConfig
from metering_middleware.credentials import CredentialManager, SecretBox
from metering_middleware.ledger.memory import MemoryStore
from metering_middleware.middleware import MeteringMiddleware
from metering_middleware.runtime import MeteringRuntime
from metering_middleware.signing import sign_v1_params, sign_v3

HOST = "facebody.cn-shanghai.aliyuncs.com"


@dataclass
class Reply:
    """What the fake upstream answers: status, headers, and body pieces."""

    status: int = 200
    body: Sequence[bytes] = (b'{"RequestId":"up-1","Data":{"FaceCount":1}}',)
    headers: list[tuple[bytes, bytes]] = field(
        default_factory=lambda: [(b"content-type", b"application/json")]
    )
    content_length: bool = True
    final_empty: bool = False  # end with an empty more_body=False message (Starlette streaming)
    raise_before_start: bool = False
    raise_after: int | None = None  # raise after this many body pieces


def error_reply(code: str, status: int, *, xml: bool = False, gz: bool = False) -> Reply:
    if xml:
        raw = (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><RequestId>up-err</RequestId>'
            f"<HostId>h</HostId><Code>{code}</Code><Message>m</Message></Error>"
        ).encode()
        ctype = b"text/xml"
    else:
        raw = json.dumps({"RequestId": "up-err", "Code": code, "Message": "m"}).encode()
        ctype = b"application/json"
    headers = [(b"content-type", ctype)]
    if gz:
        raw = gzip.compress(raw)
        headers.append((b"content-encoding", b"gzip"))
    return Reply(status=status, body=(raw[:10], raw[10:]), headers=headers)


class FakeUpstream:
    """A pure ASGI app answering every call with ``reply``; remembers what it got."""

    def __init__(self) -> None:
        self.reply = Reply()
        self.seen: list[tuple[Scope, bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.seen.append((scope, body))
        r = self.reply
        if r.raise_before_start:
            raise RuntimeError("upstream exploded")
        headers = list(r.headers)
        if r.content_length:
            headers.append((b"content-length", str(sum(map(len, r.body))).encode()))
        await send({"type": "http.response.start", "status": r.status, "headers": headers})
        for i, piece in enumerate(r.body):
            if r.raise_after is not None and i == r.raise_after:
                raise RuntimeError("body broke off")
            last = i == len(r.body) - 1 and not r.final_empty
            await send({"type": "http.response.body", "body": piece, "more_body": not last})
        if r.final_empty:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    messages: list[Message]

    def json(self) -> Any:
        return json.loads(self.body)


OnMessage = Callable[[Message], Awaitable[None]]


@dataclass
class Env:
    clock: ManualClock
    store: MemoryStore
    runtime: MeteringRuntime
    upstream: FakeUpstream
    app: MeteringMiddleware
    access_key_id: str
    secret: str

    async def request(
        self,
        *,
        method: str = "POST",
        path: str = "/",
        query: bytes = b"",
        headers: Sequence[tuple[bytes, bytes]] = (),
        body: bytes = b"",
        on_message: OnMessage | None = None,
    ) -> Response:
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query,
            "headers": list(headers),
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 80),
        }
        sent_request = False
        messages: list[Message] = []

        async def receive() -> Message:
            nonlocal sent_request
            if not sent_request:
                sent_request = True
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            messages.append(message)
            if on_message is not None:
                await on_message(message)

        await self.app(scope, receive, send)
        start = messages[0]
        return Response(
            status=start["status"],
            headers=dict(start.get("headers", [])),
            body=b"".join(m.get("body", b"") for m in messages[1:]),
            messages=messages,
        )

    def v3(
        self,
        action: str = "DetectFace",
        *,
        version: str = "2019-12-30",
        host: str = HOST,
        body: bytes = b"ImageURL=http%3A%2F%2Fx%2Fa.jpg",
        secret: str | None = None,
        access_key_id: str | None = None,
        nonce: str | None = None,
        now: datetime | None = None,
        method: str = "POST",
    ) -> dict[str, Any]:
        """Keyword arguments for ``request`` carrying a valid V3 signature.

        Each signed call moves the clock one second on, as calls spaced within the
        default 2 QPS would; QPS tests build their own bursts.
        """
        self.clock.advance(1.0)
        headers = {
            "host": host,
            "x-acs-action": action,
            "x-acs-version": version,
            "content-type": "application/x-www-form-urlencoded",
            "accept": "application/json",
        }
        headers.update(
            sign_v3(
                method,
                "/",
                [],
                headers,
                body,
                access_key_id or self.access_key_id,
                secret or self.secret,
                now=now or self.clock.now(),
                nonce=nonce or _nonce(),
            )
        )
        return {
            "method": method,
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "body": body,
        }

    def v1(
        self,
        action: str = "DetectFace",
        *,
        version: str = "2019-12-30",
        host: str = HOST,
        extra: Sequence[tuple[str, str]] = (("ImageURL", "http://x/a.jpg"),),
        fmt: str | None = "JSON",
        method: str = "GET",
    ) -> dict[str, Any]:
        self.clock.advance(1.0)
        params = [("Action", action), ("Version", version), *extra]
        if fmt is not None:
            params.append(("Format", fmt))
        signed = sign_v1_params(
            method, params, self.access_key_id, self.secret, now=self.clock.now(), nonce=_nonce()
        )
        return {
            "method": method,
            "query": urlencode(signed).encode(),
            "headers": [(b"host", host.encode())],
        }


_counter = 0


def _nonce() -> str:
    global _counter
    _counter += 1
    return f"nonce-{_counter:08d}"


async def make_env(**settings: Any) -> Env:
    clock = ManualClock()
    store = MemoryStore()
    await store.open()
    row, secret = await CredentialManager(store, SecretBox(None), clock).add("acme")
    config = MeteringConfig(ledger_url="memory://", **settings)
    runtime = MeteringRuntime(config, clock=clock, store=store)
    upstream = FakeUpstream()
    app = MeteringMiddleware(upstream, runtime=runtime)
    await runtime.start()
    return Env(clock, store, runtime, upstream, app, row.access_key_id, secret)
