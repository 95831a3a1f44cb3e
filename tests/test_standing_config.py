"""The settings of the standing check and spend guard: validated, read from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from example_gateway.config import load_config
from metering_middleware import ConfigError, MeteringConfig, MeteringRuntime


def test_enforcement_is_off_in_the_library_and_on_in_the_example_gateway() -> None:
    assert MeteringConfig().enforce_balance is False
    assert MeteringRuntime(MeteringConfig(ledger_url="memory://")).guard is None
    assert load_config(None, environ={})[1].enforce_balance is True
    off = load_config(None, environ={"METERING_ENFORCE_BALANCE": "false"})[1]
    assert off.enforce_balance is False


def test_the_gateway_file_can_turn_it_off(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[metering]\nenforce_balance = false\ngateway_processes = 3\n")
    metering = load_config(config, environ={})[1]
    assert metering.enforce_balance is False and metering.gateway_processes == 3


def test_settings_come_from_the_environment() -> None:
    env = {
        "METERING_ENFORCE_BALANCE": "yes",
        "METERING_STANDING_REFRESH": "0.5",
        "METERING_ARREARAGE_CODE": "InvalidApi.ForbiddenInvoke",
        "METERING_ARREARAGE_STATUS": "400",
        "METERING_SPEND_CAP_CODE": "Account.OverBudget",
        "METERING_SPEND_CAP_STATUS": "402",
        "METERING_GATEWAY_PROCESSES": "4",
    }
    c = MeteringConfig().with_env(env)
    assert c.enforce_balance is True and c.standing_refresh == 0.5
    assert (c.arrearage_code, c.arrearage_status) == ("InvalidApi.ForbiddenInvoke", 400)
    assert (c.spend_cap_code, c.spend_cap_status) == ("Account.OverBudget", 402)
    assert c.gateway_processes == 4


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"arrearage_status": 500}, "arrearage_status: must be an HTTP client-error status"),
        ({"spend_cap_status": 200}, "spend_cap_status: must be an HTTP client-error status"),
        ({"arrearage_code": " "}, "arrearage_code: must be a non-empty error code"),
        ({"gateway_processes": 0}, "gateway_processes: must be a positive integer"),
        ({"standing_refresh": 0}, "standing_refresh: must be a positive number of seconds"),
        ({"enforce_balance": "yes"}, "enforce_balance: must be true or false"),
    ],
)
def test_bad_settings_are_one_precise_line(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MeteringConfig(**settings)  # type: ignore[arg-type]


def test_a_bad_environment_value_names_its_variable() -> None:
    message = "METERING_ENFORCE_BALANCE: must be true or false, not 'maybe'"
    with pytest.raises(ConfigError, match=message):
        MeteringConfig().with_env({"METERING_ENFORCE_BALANCE": "maybe"})


def test_balances_need_an_sqlite_ledger() -> None:
    with pytest.raises(ConfigError, match="enforce_balance: balances need an SQLite ledger"):
        MeteringRuntime(MeteringConfig(ledger_url="memory://", enforce_balance=True))


def test_the_guard_reports_its_reloads_and_estimates(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    runtime = MeteringRuntime(MeteringConfig(ledger_url=url, enforce_balance=True))
    names = {m.name for m in runtime.metrics.collect()}
    assert {"metering_money_view_loads", "metering_spend_guard_accounts"} <= names
