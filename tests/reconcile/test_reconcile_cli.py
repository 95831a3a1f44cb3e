"""``metering reconcile`` on a seeded ledger and crafted exports: exact differences,
each reason class where expected, hour and day periods, UTC+8 boundaries, the margin."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from metering_middleware.cli import main

from .seed import DAILY, HOURLY, HOURLY_COST, ITEM_MAP, seed_ledger


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("recon") / "ledger.sqlite"
    seed_ledger(path)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def diffs(out: str) -> list[tuple[str, str, int, int, int, str]]:
    return [
        (d["period_start"], d["item"], d["upstream"], d["charged"], d["forwarded"], d["reason"])
        for d in json.loads(out)["differences"]
    ]


def test_hourly_export_every_reason_where_expected(
    ledger: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = write(tmp_path, "hourly.csv", HOURLY)
    code, out, err = run(
        capsys, "--db", f"sqlite:///{ledger}", "reconcile", "--upstream", export,
        "--month", "2026-11", "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert doc["period"] == "hour"  # the export's own granularity
    assert diffs(out) == [
        ("2026-11-02T15:00:00+08:00", "facebody.CompareFace", 2, 1, 1, "unanswered_billed"),
        ("2026-11-02T10:00:00+08:00", "facebody.DetectFace", 6, 5, 7, "free_billed"),
        # 10 calls refused (overdue) in that hour never reached the upstream: not forwarded.
        ("2026-11-02T11:00:00+08:00", "facebody.DetectFace", 5, 3, 3, "outside_gateway"),
        ("2026-11-02T14:00:00+08:00", "imageseg.SegmentBody", 1, 2, 2, "not_billed"),
        ("2026-11-02T12:00:00+08:00", "ocr.RecognizeLicensePlate", 3, 4, 4, "period_boundary"),
        ("2026-11-02T13:00:00+08:00", "ocr.RecognizeLicensePlate", 3, 2, 2, "period_boundary"),
        # Unknown items last, under the export's own name.
        ("2026-11-02T16:00:00+08:00", "DetectCelebrity", 7, 0, 0, "unknown_item"),
    ]
    details = {(d["item"], d["period_start"][11:16]): d["detail"] for d in doc["differences"]}
    assert details[("facebody.DetectFace", "10:00")] == (
        "the upstream billed 1 of the 2 free answer(s) it gave: InvalidParameter 2"
    )
    assert details[("facebody.CompareFace", "15:00")] == (
        "the upstream billed 1 call(s) the gateway gave up on: GatewayTimeout 1"
    )
    assert details[("facebody.DetectFace", "11:00")].startswith(
        "the upstream billed 2 call(s) more than the gateway forwarded: calls outside the gateway"
    )
    assert "boundary 2026-11-02T05:00:00Z" in details[("ocr.RecognizeLicensePlate", "12:00")]
    assert details[("DetectCelebrity", "16:00")] == (
        "'DetectCelebrity' is not a catalog item (lines 10): map it with --item-map"
    )
    assert {d["period_end"] for d in doc["differences"] if d["item"] == "imageseg.SegmentBody"} == {
        "2026-11-02T15:00:00+08:00"
    }
    assert err.startswith("reconciled ") and "7 difference(s)" in err
    assert "free_billed 1, not_billed 1, outside_gateway 1, period_boundary 2" in err
    assert err.count("\n") == 1  # one summary line


def test_daily_chinese_export_buckets_by_beijing_day(
    ledger: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = write(tmp_path, "daily.csv", DAILY)
    names = write(tmp_path, "map.csv", ITEM_MAP)
    code, out, err = run(
        capsys, "--db", f"sqlite:///{ledger}", "reconcile", "--upstream", export,
        "--item-map", names, "--month", "2026-11", "--format", "json", "--all",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["period"] == "day"
    # The plate calls' boundary cancels inside the day; the call of 2026-11-02T17:00Z is
    # on Beijing's 11-03 (a UTC day would put it on 11-02 and make two differences).
    assert diffs(out) == [
        ("2026-11-02T00:00:00+08:00", "facebody.CompareFace", 2, 1, 1, "unanswered_billed"),
        ("2026-11-02T00:00:00+08:00", "facebody.DetectFace", 13, 10, 12, "outside_gateway"),
        ("2026-11-03T00:00:00+08:00", "facebody.DetectFace", 1, 1, 1, "match"),
        ("2026-11-02T00:00:00+08:00", "imageseg.SegmentBody", 1, 2, 2, "not_billed"),
        ("2026-11-02T00:00:00+08:00", "ocr.RecognizeLicensePlate", 6, 6, 6, "match"),
    ]
    detail = json.loads(out)["differences"][1]["detail"]
    assert detail.endswith("(and 2 free answer(s): InvalidParameter 2)")


def test_hourly_export_reconciled_by_day(
    ledger: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = write(tmp_path, "hourly.csv", HOURLY)
    code, out, _ = run(
        capsys, "--db", f"sqlite:///{ledger}", "reconcile", "--upstream", export,
        "--period", "day", "--format", "json",
    )  # fmt: skip
    assert code == 0
    assert [(d[1], d[2], d[3], d[5]) for d in diffs(out)] == [
        ("facebody.CompareFace", 2, 1, "unanswered_billed"),
        ("facebody.DetectFace", 13, 10, "outside_gateway"),
        ("imageseg.SegmentBody", 1, 2, "not_billed"),
        ("DetectCelebrity", 7, 0, "unknown_item"),
    ]


def test_margin_from_the_export_amounts_and_from_list_prices(
    ledger: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = write(tmp_path, "hourly.csv", HOURLY)
    code, out, err = run(
        capsys, "--db", f"sqlite:///{ledger}", "reconcile", "--upstream", export,
        "--month", "2026-11", "--format", "json", "--show", "margin",
    )  # fmt: skip
    assert code == 0
    margin = json.loads(out)["margin"]
    assert margin["cost_source"] == "the export's PretaxAmount column"
    lines = {ln["item"]: ln for ln in margin["lines"]}
    # Tenants: acme 11 DetectFace (0.0176 -> charged 0.01), globex 4 plates pay-as-you-go
    # (0.60) and 2 from its plan (30 points = 0.30), initech 2 SegmentBody + 1 CompareFace
    # (0.0416 -> 0.04).
    assert lines["facebody.DetectFace"]["tenant_payg"] == "0.0176"
    assert lines["ocr.RecognizeLicensePlate"]["tenant_payg"] == "0.60"
    assert lines["ocr.RecognizeLicensePlate"]["plan_usage"] == "0.30"
    assert lines["DetectCelebrity"]["revenue"] == "0"
    assert lines["DetectCelebrity"]["upstream_cost"] == "0.07"
    total = lines["TOTAL"]
    assert Decimal(total["upstream_cost"]) == HOURLY_COST
    assert total["tenant_payg"] == "0.65"  # 0.01 + 0.60 + 0.04: what the bills charge
    assert total["revenue"] == "0.95"
    assert Decimal(total["margin"]) == Decimal("0.95") - HOURLY_COST
    assert "margin of 2026-11: CNY -0.0656" in err

    daily = write(tmp_path, "daily.csv", DAILY)
    names = write(tmp_path, "map.csv", ITEM_MAP)
    code, out, _ = run(
        capsys, "--db", f"sqlite:///{ledger}", "reconcile", "--upstream", daily,
        "--item-map", names, "--month", "2026-11", "--format", "json", "--show", "margin",
    )  # fmt: skip
    margin = json.loads(out)["margin"]
    assert margin["cost_source"].startswith("the catalog's list prices")
    lines = {ln["item"]: ln for ln in margin["lines"]}
    # 14 DetectFace x 0.0016, 6 plates x 0.15, 1 SegmentBody x 0.02, 2 CompareFace x 0.0016
    assert lines["TOTAL"]["upstream_cost"] == "0.9456"
    assert lines["TOTAL"]["margin"] == "0.0044"


def test_table_output_has_both_sections(
    ledger: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = write(tmp_path, "hourly.csv", HOURLY)
    code, out, _ = run(
        capsys, "--db", f"sqlite:///{ledger}", "reconcile", "--upstream", export,
        "--month", "2026-11",
    )  # fmt: skip
    assert code == 0
    assert out.splitlines()[0].split() == [
        "period_start", "period_end", "item", "upstream", "charged", "forwarded",
        "difference", "reason", "detail",
    ]  # fmt: skip
    assert "== Margin 2026-11 (CNY; operator's cost from the export's PretaxAmount column)" in out
    code, out, _ = run(
        capsys, "--db", f"sqlite:///{ledger}", "reconcile", "--upstream", export,
        "--month", "2026-11", "--format", "csv",
    )  # fmt: skip
    assert code == 0 and out.startswith("period_start,period_end,item,")
    assert len(out.splitlines()) == 8  # header + 7 differences


def test_hourly_reconciliation_of_a_daily_export_is_refused(
    ledger: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = write(tmp_path, "daily.csv", DAILY)
    code, out, err = run(
        capsys, "--db", f"sqlite:///{ledger}", "reconcile", "--upstream", export,
        "--period", "hour",
    )  # fmt: skip
    assert (code, out) == (1, "")
    assert err == (
        f"metering: {export} line 2: the row covers a whole day; reconcile by hour needs an "
        "hourly export (Detail), or use --period day\n"
    )


def test_bad_arguments_exit_2(
    ledger: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--db", f"sqlite:///{ledger}", "reconcile", "--month", "2026-11"])
    assert exit_.value.code == 2
    assert "the following arguments are required: --upstream" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["--db", f"sqlite:///{ledger}", "reconcile", "--upstream", "x", "--month", "11"])
    assert exit_.value.code == 2
    assert "billing month must look like YYYY-MM, got '11'" in capsys.readouterr().err
    export = write(tmp_path, "hourly.csv", HOURLY)
    for extra, message in (
        (["--since", "2026-11-01"], "give --month or --since/--until, not both"),
        (["--format", "csv", "--show", "both"], "--format csv prints one table: --show "
         "differences or --show margin"),
    ):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            main(["--db", f"sqlite:///{ledger}", "reconcile", "--upstream", export, "--month",
                  "2026-11", *extra])  # fmt: skip
        assert exit_.value.code == 2
        out, err = capsys.readouterr()
        assert (out, err) == (
            "",
            f"metering reconcile: error: {message} (see: metering reconcile --help)\n",
        )
    code, out, err = run(
        capsys, "--db", f"sqlite:///{ledger}", "reconcile", "--upstream", str(tmp_path / "none"),
    )  # fmt: skip
    assert (code, out) == (1, "")
    assert err == f"metering: cannot read {tmp_path / 'none'}: No such file or directory\n"


def test_a_range_in_beijing_time_ignores_the_rows_outside(
    ledger: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = write(tmp_path, "hourly.csv", HOURLY)
    code, out, err = run(
        capsys, "--db", f"sqlite:///{ledger}", "reconcile", "--upstream", export,
        "--since", "2026-11-02T12:00", "--until", "2026-11-02T14:00", "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["since"], doc["until"]) == (
        "2026-11-02T12:00:00+08:00",
        "2026-11-02T14:00:00+08:00",
    )
    assert [d[5] for d in diffs(out)] == ["period_boundary", "period_boundary"]
    assert doc["margin"] is None  # not one billing month
    assert "8 row(s) outside the range ignored" in err
