"""The mock VIAPI as a process of its own that writes down every RequestId it answers:
``python mock_worker.py PORT IDS_FILE``.

Each answer's ``x-acs-request-id`` is appended to IDS_FILE (one line, ``status id``) when
its head is sent, with one ``write`` on an ``O_APPEND`` descriptor: the list is complete
whenever the process is stopped, and is what the ledger is checked against (every
record's RequestId was answered by the upstream, none made up).
"""

from __future__ import annotations

import os
import sys

import uvicorn
from starlette.types import Message, Receive, Scope, Send

from example_gateway.mock_upstream import create_mock_upstream


def main() -> None:
    port, ids = int(sys.argv[1]), sys.argv[2]
    fd = os.open(ids, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    mock = create_mock_upstream()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await mock(scope, receive, send)
            return

        async def noting(message: Message) -> None:
            if message["type"] == "http.response.start":
                found = dict(message.get("headers", [])).get(b"x-acs-request-id")
                if found:
                    os.write(fd, b"%d %s\n" % (message["status"], found))
            await send(message)

        await mock(scope, receive, noting)

    # Keep-alive longer than any run: uvicorn's default (5 s) closes an idle connection
    # while a gateway may be reusing it, and that race (a 502 BadGateway, free) is the
    # proxy's transport, not what these tests are about.
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_keep_alive=300,
    )


if __name__ == "__main__":
    main()
