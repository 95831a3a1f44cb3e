"""A TCP proxy in front of a real Redis that can lose one reply: the script ran on the
server, the connection broke before its answer reached the client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

__all__ = ["LossyProxy", "lossy_proxy"]


class LossyProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        #: Commands (the first word of a request, as sent) seen going to Redis.
        self.commands: list[bytes] = []
        #: Set to lose the reply to the next request naming this command, then cleared.
        self.lose_reply_to: bytes | None = None
        self.lost = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        dropping = asyncio.Event()  # the next bytes from Redis are the reply to lose

        async def to_redis() -> None:
            while chunk := await reader.read(65536):
                self.commands += [w for w in (b"EVALSHA", b"SCRIPT", b"PING") if w in chunk]
                if self.lose_reply_to is not None and self.lose_reply_to in chunk:
                    self.lose_reply_to = None
                    dropping.set()
                up_writer.write(chunk)
                await up_writer.drain()

        async def to_client() -> None:
            while chunk := await up_reader.read(65536):
                if dropping.is_set():  # Redis ran it; the client sees its connection close
                    self.lost += 1
                    return
                writer.write(chunk)
                await writer.drain()

        pumps = [asyncio.create_task(to_redis()), asyncio.create_task(to_client())]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            up_writer.close()
            writer.close()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


@contextlib.asynccontextmanager
async def lossy_proxy(upstream_port: int) -> AsyncIterator[LossyProxy]:
    proxy = LossyProxy(upstream_port)
    server = await asyncio.start_server(proxy._accept, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        server.close()
        for task in list(proxy._tasks):
            task.cancel()
        await asyncio.gather(*proxy._tasks, return_exceptions=True)
