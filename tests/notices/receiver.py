"""A real webhook receiver for tests: an ASGI app served by uvicorn, scripted per request."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from metering_middleware.notices import WebhookVerificationError, verify


@dataclass
class Seen:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers request ``i`` as ``script[i]`` (then ``then``): an HTTP status, or "block"
    (never answers: a receiver that hangs). 2xx answers only to a delivery whose signature
    verifies with ``secret`` at ``now()`` (else 400)."""

    secret: str
    script: list[int | str] = field(default_factory=list)
    then: int | str = 200
    now: Any = None  # () -> float, the clock deliveries are signed with
    seen: list[Seen] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)  # ids answered 2xx, verified
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)  # "block" waits on it

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
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
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        index = len(self.seen)
        self.seen.append(Seen(headers, body))
        self.arrived.set()
        action = self.script[index] if index < len(self.script) else self.then
        if action == "block":
            await self.release.wait()
            action = 200
        assert isinstance(action, int)
        status = action
        if 200 <= status < 300:
            try:
                msg_id = verify(
                    self.secret, headers, body, now=None if self.now is None else self.now()
                )
            except WebhookVerificationError:
                status = 400
            else:
                self.accepted.append(msg_id)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def wait_for(self, n: int, limit: float = 20.0) -> None:
        """Until ``n`` requests arrived (bounded: a test never hangs)."""

        async def until() -> None:
            while len(self.seen) < n:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(until(), limit)
