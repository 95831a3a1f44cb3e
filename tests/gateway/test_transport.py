"""``make_client``: both transports behave the same where the proxy depends on it."""

from __future__ import annotations

import httpx
import pytest

from example_gateway.mock_upstream import create_mock_upstream
from example_gateway.transport import TransportKind, make_client
from tests.support.servers import free_port, run_server

LIMITS = httpx.Limits(max_connections=4, max_keepalive_connections=4)
KINDS: list[TransportKind] = ["aiohttp", "httpx"]


@pytest.mark.parametrize("kind", KINDS)
async def test_no_default_headers_and_no_cookie_jar(kind: TransportKind) -> None:
    async with make_client(kind, LIMITS, httpx.Timeout(5)) as client:
        assert not client.headers
        answer = httpx.Response(
            200,
            headers={"set-cookie": "session=caller-a"},
            request=httpx.Request("GET", "http://x/"),
        )
        client.cookies.extract_cookies(answer)
        assert not client.cookies  # one caller's cookie never rides on another's request


@pytest.mark.parametrize("kind", KINDS)
async def test_sends_only_the_headers_it_is_given(kind: TransportKind) -> None:
    mock = create_mock_upstream()
    async with run_server(mock) as upstream, make_client(kind, LIMITS, httpx.Timeout(5)) as client:
        request = httpx.Request("GET", upstream, headers={"x-only": "this"})
        response = await client.send(request)
        assert response.status_code == 200
    names = {name for name, _ in mock.stats.recent[-1].headers}
    assert names <= {"host", "x-only", "connection"}
    assert "x-only" in names


@pytest.mark.parametrize("kind", KINDS)
async def test_refused_connection_is_a_connect_error(kind: TransportKind) -> None:
    # httpx-aiohttp alone reports it as ConnectTimeout, which the proxy would answer with 504.
    async with make_client(kind, LIMITS, httpx.Timeout(5)) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{free_port()}/")


@pytest.mark.parametrize("kind", KINDS)
async def test_slow_answer_is_a_timeout(kind: TransportKind) -> None:
    mock = create_mock_upstream(slow_seconds=60)
    async with run_server(mock) as upstream, make_client(kind, LIMITS, httpx.Timeout(0.1)) as c:
        with pytest.raises(httpx.TimeoutException):
            await c.get(upstream, headers={"x-mock-outcome": "slow"})
        await mock.wait_until(lambda s: s.aborted == 1)


def test_unknown_transport_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown transport"):
        make_client("curl", LIMITS, httpx.Timeout(5))  # type: ignore[arg-type]
