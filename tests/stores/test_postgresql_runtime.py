"""A PostgreSQL ledger in the runtime, the example gateway and the CLI.

What runs on PostgreSQL works (plans, settlement, balances and the spend guard among it);
what still needs the SQLite file (webhooks, the admin API, the tenant view) refuses at start or per
command with one line, never a silent "nothing happens" (docs/postgresql.md).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

import example_gateway.__main__ as gateway_cli
from example_gateway.config import load_config
from metering_middleware import ConfigError, MeteringConfig, MeteringRuntime
from metering_middleware.catalog import default_catalog
from metering_middleware.cli import main
from metering_middleware.clock import ManualClock
from metering_middleware.credentials import CredentialManager, SecretBox
from metering_middleware.errors import ApiError
from metering_middleware.ledger import CallRecord
from metering_middleware.rating import buy_qps_subscription
from metering_middleware.rating.cash import top_up
from metering_middleware.stores.postgresql import PostgresStore
from metering_middleware.stores.postgresql.rating import PostgresRatingStore
from tests.support.postgres import PostgresCluster


@pytest.mark.parametrize(
    ("setting", "name"),
    [({"webhook_url": "http://127.0.0.1:9/h", "webhook_secret": "s" * 24}, "webhook_url")],
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
    # QPS entitlements come from the subscriptions stored beside the ledger.
    assert isinstance(runtime.rating_store, PostgresRatingStore)
    async with runtime:
        assert await runtime.ready()
        before = await runtime.entitlements.qps("acme", "facebody", "DetectFace")
        await buy_qps_subscription(
            runtime.rating_store, default_catalog(), account="acme", category="facebody",
            action="DetectFace", qps=25, ordered_at=datetime.now(UTC), price_paid="0",
            require_funds=False,
        )  # fmt: skip
        await runtime.entitlements.refresh()
        assert await runtime.entitlements.qps("acme", "facebody", "DetectFace") == 25
    assert before != 25  # the catalog's default before the purchase


async def test_the_runtime_settles_and_guards_balances_on_postgresql(
    pg_url: str, tmp_path: Path
) -> None:
    start = datetime(2026, 3, 2, tzinfo=UTC)
    clock = ManualClock(start)
    config = MeteringConfig(
        ledger_url=pg_url,
        journal_path=str(tmp_path / "j"),
        settle_interval=3600.0,  # passes run here by hand (settle_now)
        enforce_balance=True,
    )
    catalog = default_catalog()
    plate = catalog.by_item()["ocr.RecognizeLicensePlate"]
    # The ledger on the same clock: records arrive (recorded_at) when the test says.
    ledger = PostgresStore.from_url(pg_url, clock=clock)
    runtime = MeteringRuntime(config, clock=clock, store=ledger)
    assert runtime.settler is not None and runtime.guard is not None
    # Entitlements and the money view read through one rating store (one pool).
    assert runtime.guard.view._store is runtime.rating_store
    async with runtime:
        await CredentialManager(runtime.store, SecretBox(None), clock).add("acct", None)
        calls = [
            CallRecord(
                id=f"c{i}", request_id=None, account="acct", access_key_id="AK",
                category=plate.category, action=plate.action, version=plate.version,
                item=plate.item, occurred_at=start + timedelta(seconds=i), status=200,
                error_code=None, latency_ms=1.0,
            )
            for i in range(4)
        ]  # fmt: skip
        async with PostgresRatingStore.from_url(pg_url) as ratings:
            await top_up(ratings, "acct", "0.30", key="t1", clock=clock)
        await runtime.guard.view.refresh()
        assert runtime.guard.admit("acct", plate) is not None  # funded: admitted
        await runtime.store.write(calls, [])
        clock.set(start + timedelta(hours=1))
        report = await runtime.settler.settle_now()
        assert report is not None and report.records == 4
        assert runtime.settler.stats.passes == 1
        await runtime.guard.view.refresh()
        with pytest.raises(ApiError) as refused:  # 0.30 - 4 x 0.15 settled: overdue
            runtime.guard.admit("acct", plate)
        assert refused.value.kind.code == "Account.Arrearage"
        async with PostgresRatingStore.from_url(pg_url) as ratings:
            assert await ratings.balances() == {"acct": Decimal("-0.30")}
            assert "acct" in await ratings.standings()


def test_the_example_gateway_starts_its_money_features_on_postgresql(
    pg_url: str, tmp_path: Path
) -> None:
    # Its defaults (settle_interval 60, enforce_balance on) build on PostgreSQL now.
    path = tmp_path / "gateway.toml"
    path.write_text(f'[metering]\nledger_url = "{pg_url}"\n', encoding="utf-8")
    _, metering = load_config(path, environ={})
    runtime = MeteringRuntime(metering)
    assert runtime.settler is not None and runtime.guard is not None


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
    assert main(["--db", pg_url, "plans", "list", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


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
