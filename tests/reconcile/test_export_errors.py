"""Malformed or foreign exports: one line naming the line and column, exit 1, no
traceback, nothing on stdout; and the shapes that are accepted."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from metering_middleware.cli import main
from metering_middleware.clock import BEIJING
from metering_middleware.reconcile import ExportError, Granularity, read_export

from .seed import CALLS, seed_ledger

HEAD = "BillingItem,UsageStartTime,UsageEndTime,Usage,UsageUnit\n"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("recon-errors") / "ledger.sqlite"
    seed_ledger(path, settled=False)
    return f"sqlite:///{path}"


CASES = [
    ("empty", b"", "{f}: empty file: no header line (expected a CSV usage export)"),
    ("blank", b"\n \n", "{f}: empty file: no header line (expected a CSV usage export)"),
    (
        "binary",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        "{f} line 1: not a CSV text file (NUL bytes: a binary file?)",
    ),
    (
        "gbk",
        "计费项,用量\n人脸检测,3\n".encode("gbk"),
        "{f} line 1: not UTF-8 text (byte 0xbc); export the CSV as UTF-8",
    ),
    (
        "foreign",
        b"name,email\nbob,bob@example.com\n",
        "{f} line 1: not an Alibaba Cloud usage export: no known column in the header "
        "('name, email'); expected BillingItem, Usage, UsageStartTime or their Chinese names",
    ),
    (
        "no-usage",
        b"BillingItem,UsageStartTime\nDetectFace,2026-11-02 10:00:00\n",
        "{f} line 1, column usage: missing column Usage (or an alias: docs/reconcile.md)",
    ),
    (
        "no-time",
        b"BillingItem,Usage\nDetectFace,3\n",
        "{f} line 1, column start: missing column UsageStartTime / BillingDate "
        "(or an alias: docs/reconcile.md)",
    ),
    (
        "bad-number",
        (
            HEAD + "DetectFace,2026-11-02 10:00:00,2026-11-02 11:00:00,3,次\n"
            "DetectFace,2026-11-02 11:00:00,2026-11-02 12:00:00,three,次\n"
        ).encode(),
        "{f} line 3, column Usage: 'three' is not a number",
    ),
    (
        "fraction",
        (HEAD + "DetectFace,2026-11-02 10:00:00,2026-11-02 11:00:00,1.5,次\n").encode(),
        "{f} line 2, column Usage: '1.5' 次 is not a whole number of calls",
    ),
    (
        "unit",
        (HEAD + "DetectFace,2026-11-02 10:00:00,2026-11-02 11:00:00,3,GB\n").encode(),
        "{f} line 2, column UsageUnit: unknown unit 'GB' (calls: 次, 千次, 万次, calls)",
    ),
    (
        "seconds",
        (HEAD + "DetectFace,2026-11-02 10:00:00,2026-11-02 11:00:00,3,秒\n").encode(),
        "{f} line 2, column UsageUnit: usage by duration (video items) is not metered",
    ),
    (
        "time",
        (HEAD + "DetectFace,2026-13-02 10:00:00,2026-11-02 11:00:00,3,次\n").encode(),
        "{f} line 2, column UsageStartTime: '2026-13-02 10:00:00' is not a time "
        "(2026-11-01 08:00:00 or ISO 8601)",
    ),
    (
        "two-hours",
        (HEAD + "DetectFace,2026-11-02 10:00:00,2026-11-02 12:00:00,3,次\n").encode(),
        "{f} line 2, column UsageEndTime: a row must cover one hour or one day "
        "(export by Detail/hour or by Day)",
    ),
    (
        "half-hour",
        (HEAD + "DetectFace,2026-11-02 10:30:00,2026-11-02 11:30:00,3,次\n").encode(),
        "{f} line 2, column UsageStartTime: an hour's row must start on the hour",
    ),
    (
        "fields",
        (HEAD + "DetectFace,2026-11-02 10:00:00,3,次\n").encode(),
        "{f} line 2: 4 fields where the header has 5",
    ),
    (
        "currency",
        b"BillingItem,BillingDate,Usage,PretaxAmount,Currency\nDetectFace,2026-11-02,3,1,USD\n",
        "{f} line 2, column Currency: amounts in USD, not CNY",
    ),
    (
        "amount",
        b"BillingItem,BillingDate,Usage,PretaxAmount\nDetectFace,2026-11-02,3,1.2.3\n",
        "{f} line 2, column PretaxAmount: '1.2.3' is not an amount",
    ),
    (
        "no-item",
        b"BillingItem,BillingDate,Usage\n,2026-11-02,3\n",
        "{f} line 2, column BillingItem: no billable item",
    ),
    (
        "not-viapi",
        b"ProductCode,BillingItem,BillingDate,Usage,UsageUnit\n"
        b"ecs,Instance Type,2026-11-02,24,Hour\n",
        "{f} line 2, column UsageUnit: unknown unit 'Hour' (calls: 次, 千次, 万次, calls)",
    ),
    (
        "all-unknown",
        b"ProductCode,BillingItem,BillingDate,Usage\necs,Instance Type,2026-11-02,24\n"
        b"oss,Storage,2026-11-02,3\n",
        "{f} line 2: no billable item of the file is a catalog item ('Instance Type'): "
        "not a VIAPI usage export, or map its names with --item-map",
    ),
]


@pytest.mark.parametrize(("name", "data", "message"), CASES, ids=[c[0] for c in CASES])
def test_malformed_export_is_one_line_exit_1(
    db: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    data: bytes,
    message: str,
) -> None:
    export = tmp_path / f"{name}.csv"
    export.write_bytes(data)
    code = main(["--db", db, "reconcile", "--upstream", str(export), "--month", "2026-11"])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert err == "metering: " + message.format(f=export) + "\n"


def test_a_bad_item_map_names_its_line(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "e.csv"
    export.write_text("计费项,账单日期,用量\n人脸检测定位,2026-11-02,3\n", encoding="utf-8")
    names = tmp_path / "map.csv"
    names.write_text("upstream_item,item\n人脸检测定位,facebody.Nope\n", encoding="utf-8")
    code = main(["--db", db, "reconcile", "--upstream", str(export), "--item-map", str(names)])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert err == (
        f"metering: {names} line 2, column item: 'facebody.Nope' is not a catalog item "
        "(e.g. facebody.DetectFace)\n"
    )


def parse(text: str) -> list[tuple[str, datetime, Granularity, int, Decimal | None]]:
    export = read_export(text.encode("utf-8"), name="x.csv", zone=BEIJING)
    return [(r.raw_item, r.start, r.granularity, r.calls, r.amount) for r in export.rows]


def test_accepted_shapes() -> None:
    # Console spellings, inclusive ends (10:59:59), thousands, BOM, blank lines.
    assert parse(
        "\ufeffBilling Item,Start Time,End Time,Usage,Usage Unit,Pretax Amount\n"
        'DetectFace,2026/11/02 10:00:00,2026/11/02 10:59:59,"1,200",次,1.92\n'
        "\n"
        "DetectFace,2026-11-02 11:00,2026-11-02 12:00,1.5,千次,2.4\n"
    ) == [
        (
            "DetectFace",
            datetime(2026, 11, 2, 2, tzinfo=UTC),
            Granularity.HOUR,
            1200,
            Decimal("1.92"),
        ),
        (
            "DetectFace",
            datetime(2026, 11, 2, 3, tzinfo=UTC),
            Granularity.HOUR,
            1500,
            Decimal("2.4"),
        ),
    ]
    # Times that say their zone are taken as said; start times alone: hours unless all
    # of them are at midnight (in the export's zone).
    assert parse(
        "计费项Code,开始时间,用量\nfacebody.DetectFace,2026-11-02T02:00:00Z,3\n"
        "facebody.DetectFace,2026-11-02T11:00:00+08:00,4\n"
    ) == [
        ("facebody.DetectFace", datetime(2026, 11, 2, 2, tzinfo=UTC), Granularity.HOUR, 3, None),
        ("facebody.DetectFace", datetime(2026, 11, 2, 3, tzinfo=UTC), Granularity.HOUR, 4, None),
    ]
    assert parse("计费项,开始时间,用量\nDetectFace,2026-11-02 00:00:00,3\n") == [
        ("DetectFace", datetime(2026, 11, 1, 16, tzinfo=UTC), Granularity.DAY, 3, None)
    ]
    # A header alone is an export of nothing: no rows, no error.
    assert parse("BillingItem,BillingDate,Usage\n") == []


def test_read_export_raises_only_export_errors() -> None:
    with pytest.raises(ExportError):
        read_export(b"\xff\xfe\x00a", name="x", zone=BEIJING)


def test_a_whole_bill_export_with_product(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # ECS rows (unit Hour) would be refused; --product reads the VIAPI rows only.
    export = tmp_path / "bill.csv"
    export.write_text(
        "ProductCode,BillingItem,BillingDate,Usage,UsageUnit\n"
        "ecs,Instance Type,2026-11-02,24,Hour\n"
        "viapi,SegmentBody,2026-11-02,2,次\n",
        encoding="utf-8",
    )
    code = main(
        ["--db", db, "reconcile", "--upstream", str(export), "--product", "VIAPI", "--format",
         "json", "--month", "2026-11", "--show", "differences"]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "1 row(s) of other products skipped" in err
    # SegmentBody matches (2 = 2); what remains is everything else the gateway charged.
    assert '"imageseg.SegmentBody"' not in out and '"facebody.DetectFace"' in out


def test_an_export_of_nothing_lists_every_charged_call(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "none.csv"
    export.write_text("BillingItem,BillingDate,Usage\n", encoding="utf-8")
    code = main(["--db", db, "reconcile", "--upstream", str(export), "--month", "2026-11",
                 "--format", "csv", "--show", "differences"])  # fmt: skip
    out, _ = capsys.readouterr()
    assert code == 0
    rows = out.splitlines()[1:]
    assert {r.split(",")[7] for r in rows} == {"not_billed"}
    assert sum(int(r.split(",")[4]) for r in rows) == len(CALLS) == 20  # every record
