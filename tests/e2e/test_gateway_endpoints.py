"""The example gateway's own endpoints and its start-up checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from .conftest import Gateway
from .signed import v3_headers


async def test_health_ready_and_metrics(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10.0) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).status_code == 200
        body = b"ImageURL=https%3A%2F%2Fx%2Fnoface.jpg"
        await client.post(
            "/", content=body, headers=v3_headers(gateway.access_key_id, gateway.secret, body)
        )
        metrics = (await client.get("/metrics")).text
        assert (
            'metering_calls_total{action="DetectFace",category="facebody",'
            'outcome="charged",reason="InvalidImage.NotFoundFace"} 1.0'
        ) in metrics
        assert "metering_ledger_accepting 1.0" in metrics
        assert "acme" not in metrics  # never labelled by account
        # None of these were metered.
        assert gateway.mock.stats.requests == 1

        os.rename(gateway.db, gateway.db.with_suffix(".moved"))
        assert (await client.get("/readyz")).status_code == 503


def _serve(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "example_gateway", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_configuration_stops_the_start_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[metering]\nmode = "sometimes"\n')
    result = _serve(config)
    assert result.returncode == 2  # bad usage: a setting
    assert result.stderr.strip() == (
        f"metering-gateway: {config}: metering.mode: must be one of strict, batched, "
        "not 'sometimes'"
    )
    config.write_text('[gateway]\nupstream = "nowhere"\n')
    result = _serve(config)
    assert result.returncode == 2 and "gateway.upstream" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_ledger_that_cannot_start_stops_the_gateway_with_one_line(tmp_path: Path) -> None:
    """A lost ledger (its journal left behind) is refused at start: one line, exit 1."""
    db = tmp_path / "ledger.sqlite"
    (tmp_path / "ledger.sqlite.journal").write_text('{"c": "a count of the lost ledger"}\n')
    config = tmp_path / "gateway.toml"
    config.write_text(f'[metering]\nledger_url = "sqlite:///{db}"\n')
    result = _serve(config)
    assert result.returncode == 1
    assert result.stderr.startswith("metering-gateway: no ledger file at ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not db.exists()
