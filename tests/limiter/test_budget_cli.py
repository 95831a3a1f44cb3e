"""``metering`` warns when the QPS sold for an API exceeds the operator's upstream budget:
on buying or renewing a QPS subscription, and in ``metering limits check``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from metering_middleware.cli import main

WARNING = "metering: warning: facebody.DetectFace: {sold} QPS sold from {at}, above the "
WARNING += "upstream budget of {budget} (upstream_qps): calls over it are refused with "
WARNING += "Throttling.Api\n"


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    for name in ("METERING_UPSTREAM_QPS", "METERING_CATALOG_PATH", "METERING_LEDGER_URL"):
        monkeypatch.delenv(name, raising=False)
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    assert main(["--db", url, "accounts", "add", "a"]) == 0
    capsys.readouterr()
    return url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def buy(
    capsys: pytest.CaptureFixture[str],
    db: str,
    account: str,
    qps: int,
    *extra: str,
    action: str = "DetectFace",
    at: str | None = "2026-03-01T00:00:00+08:00",
) -> tuple[int, str, str]:
    when = ["--ordered-at", at] if at else []  # none: now
    return run(
        capsys,
        "--db",
        db,
        "plans",
        "buy",
        "qps",
        account,
        "--category",
        "facebody",
        "--action",
        action,
        "--qps",
        str(qps),
        "--price",
        "10",
        "--allow-debt",
        *when,
        "--id",
        f"{account}-{action}-{(at or 'now')[:10]}",
        *extra,
    )


def test_buying_above_the_budget_warns_in_one_line_and_succeeds(
    db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METERING_UPSTREAM_QPS", "facebody=100,facebody.DetectFace=50")
    code, _, err = buy(capsys, db, "a", 30)
    assert code == 0 and err == "bought a-DetectFace-2026-03-01 for a\n"  # 30 of 50
    code, out, err = buy(capsys, db, "b", 30, "--format", "json")
    assert code == 0 and json.loads(out)[0]["id"] == "b-DetectFace-2026-03-01"
    assert err.splitlines()[0] == "bought b-DetectFace-2026-03-01 for b"
    assert err.splitlines(keepends=True)[1:] == [
        WARNING.format(sold=60, at="2026-03-01T00:00:00+08:00", budget=50)
    ]
    # CompareFace's budget is the category's 100: 60 sold is within it.
    code, _, err = buy(capsys, db, "a", 30, action="CompareFace")
    code, _, err = buy(capsys, db, "b", 30, action="CompareFace")
    assert code == 0 and "warning" not in err


def test_renewals_are_checked_over_their_own_period(
    db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METERING_UPSTREAM_QPS", "facebody.DetectFace=50")
    # Bought today, both at one instant: renewable now (a renewal precedes expiry).
    today = datetime.now(UTC).date().isoformat() + "T00:00:00+00:00"
    buy(capsys, db, "a", 30, at=today)
    buy(capsys, db, "b", 30, at=today)  # 60 this month: warned (above)
    # a renews: the next period holds only a's renewal (b's ends with this period).
    argv = ["--db", db, "plans", "renew", "--allow-debt", "--format", "json"]
    code, out, err = run(capsys, *argv, f"a-DetectFace-{today[:10]}")
    assert code == 0 and "warning" not in err
    # b renews too: 60 again, from the start of the renewed period.
    code, out, err = run(capsys, *argv, f"b-DetectFace-{today[:10]}")
    assert code == 0
    start = json.loads(out)[0]["start"]
    assert err.splitlines(keepends=True)[-1] == WARNING.format(sold=60, at=start, budget=50)


def test_no_budget_no_warning(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    for account in ("a", "b"):
        code, _, err = buy(capsys, db, account, 50)
        assert code == 0 and "warning" not in err
    code, out, err = run(
        capsys, "--db", db, "limits", "check", "--at", "2026-03-10", "--format", "json"
    )
    assert code == 0 and "no upstream_qps configured" in err
    [row] = json.loads(out)
    assert (row["upstream_qps"], row["sold_now"], row["status"]) == (None, 100, "no budget")


def test_limits_check_lists_apis_and_warns_for_each_above(
    db: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    buy(capsys, db, "a", 30)
    buy(capsys, db, "b", 10)
    buy(capsys, db, "c", 20, at="2026-03-15T00:00:00+08:00")  # 60 from the 15th
    buy(capsys, db, "a", 5, action="CompareFace")
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[gateway]\nport = 8080\n[metering]\nmode = "batched"\n'
        '[metering.upstream_qps]\nfacebody = 10\n"facebody.DetectFace" = 50\n'
        '"facebody.SearchFace" = 20\n'
    )
    argv = ["--db", db, "limits", "check", "--config", str(config), "--format", "json"]
    code, out, err = run(capsys, *argv, "--at", "2026-03-10")
    assert code == 0
    assert err == WARNING.format(sold=60, at="2026-03-15T00:00:00+08:00", budget=50)
    rows = {(r["category"], r["action"]): r for r in json.loads(out)}
    assert {
        k: (r["upstream_qps"], r["sold_now"], r["sold_peak"], r["status"]) for k, r in rows.items()
    } == {
        ("facebody", "CompareFace"): (10, 5, 5, "ok"),
        ("facebody", "DetectFace"): (50, 40, 60, "over"),
        ("facebody", "SearchFace"): (20, 0, 0, "ok"),  # named in the budget, not sold
    }
    # In April only c's (to 15 April) is left: within the budget, nothing to warn of.
    code, out, err = run(capsys, *argv, "--at", "2026-04-02")
    assert code == 0 and err == ""
    assert {r["action"]: r["sold_peak"] for r in json.loads(out)} == {
        "DetectFace": 20,
        "SearchFace": 0,
    }


def test_a_bad_budget_file_is_one_line_exit_1(
    db: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[metering.upstream_qps]\nfacebody = 0\n")
    code, out, err = run(capsys, "--db", db, "limits", "check", "--config", str(config))
    assert (code, out) == (1, "")
    assert err.startswith(f"metering: {config}: metering.upstream_qps: must be a table of")
    assert err.count("\n") == 1
    code, _, err = run(capsys, "--db", db, "limits", "check", "--config", str(tmp_path / "no"))
    assert code == 1 and err.startswith("metering: --config: No such file") and err.count("\n") == 1


def test_a_bad_budget_stops_a_purchase_before_anything_is_bought(
    db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METERING_UPSTREAM_QPS", "facebody:50")
    code, out, err = buy(capsys, db, "a", 30)
    assert (code, out) == (1, "")
    assert err.startswith("metering: environment variable METERING_UPSTREAM_QPS: must be a table")
    assert err.count("\n") == 1
    monkeypatch.delenv("METERING_UPSTREAM_QPS")
    code, out, _ = run(capsys, "--db", db, "plans", "list", "--format", "json")
    assert code == 0 and json.loads(out) == []
