"""A PostgreSQL ledger in the runtime, the example gateway and the CLI.

What runs on PostgreSQL works; what still needs the SQLite file (settlement, balances,
notices, plans, reports) refuses at start or per command with one line, never a silent
"nothing happens" (docs/postgresql.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import example_gateway.__main__ as gateway_cli
from metering_middleware import ConfigError, MeteringConfig, MeteringRuntime
from metering_middleware.cli import main
from metering_middleware.stores.postgresql import PostgresStore
from tests.support.postgres import PostgresCluster


@pytest.mark.parametrize(
    ("setting", "name"),
    [
        ({"settle_interval": 60.0}, "settle_interval"),
        ({"enforce_balance": True}, "enforce_balance"),
        ({"webhook_url": "http://127.0.0.1:9/h", "webhook_secret": "s" * 24}, "webhook_url"),
    ],
)
def test_money_features_refuse_a_postgresql_ledger_at_start(
    pg_url: str, setting: dict[str, object], name: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{name}: .*not on PostgreSQL yet") as caught:
        MeteringRuntime(MeteringConfig(ledger_url=pg_url, **setting))  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


async def test_the_runtime_runs_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    config = MeteringConfig(ledger_url=pg_url, journal_path=str(tmp_path / "j"))
    runtime = MeteringRuntime(config)
    assert isinstance(runtime.store, PostgresStore)
    assert runtime.rating_store is None  # no plans on PostgreSQL yet: catalog defaults
    async with runtime:
        assert await runtime.ready()


def test_the_example_gateway_refuses_its_default_money_features_in_one_line(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f'[metering]\nledger_url = "{pg_url}"\n', encoding="utf-8")
    assert gateway_cli.main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not on PostgreSQL yet" in err


def test_the_cli_keeps_accounts_and_calls_on_postgresql(
    pg_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("METERING_SECRET_KEY", raising=False)
    assert main(["--db", pg_url, "accounts", "add", "acme", "--format", "json"]) == 0
    added = json.loads(capsys.readouterr().out)
    assert added[0]["account"] == "acme"
    assert main(["--db", pg_url, "accounts", "list", "--format", "json"]) == 0
    assert [r["account"] for r in json.loads(capsys.readouterr().out)] == ["acme"]
    assert main(["--db", pg_url, "ledger", "calls", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    # Plans live beside an SQLite ledger: one line, exit 1, nothing half done.
    assert main(["--db", pg_url, "plans", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("metering: ") and "SQLite" in err and err.count("\n") == 1


def test_the_cli_refuses_a_database_without_a_ledger(
    pg_cluster: PostgresCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    url = pg_cluster.url(pg_cluster.new_database())
    assert main(["--db", url, "ledger", "calls"]) == 1
    err = capsys.readouterr().err
    assert "no ledger" in err and err.count("\n") == 1
    # Nothing was created in it by the read.
    assert (
        pg_cluster.psql(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", url.rsplit("/", 1)[1]
        )
        == "0\n"
    )


def test_the_gateway_refuses_the_admin_api_on_postgresql_in_one_line(
    pg_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEWAY_ADMIN_TOKENS", "adm_" + "x" * 40)
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[metering]\nledger_url = "{pg_url}"\njournal_path = "{tmp_path / "j"}"\n'
        "settle_interval = 0\nenforce_balance = false\n",
        encoding="utf-8",
    )
    assert gateway_cli.main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "admin API needs an SQLite ledger" in err
