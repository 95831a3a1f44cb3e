"""The packaged catalog and the validation of user catalogs."""

from __future__ import annotations

import copy
import tomllib
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from metering_middleware.catalog import CatalogError, default_catalog, load_catalog, parse_catalog


def _default_doc() -> dict[str, Any]:
    text = (
        resources.files("metering_middleware.catalog")
        .joinpath("default_catalog.toml")
        .read_text("utf-8")
    )
    return tomllib.loads(text)


def test_default_catalog_covers_the_required_categories() -> None:
    catalog = default_catalog()
    billable = [it for it in catalog.items if not it.free]
    assert len(billable) >= 12
    assert {"facebody", "ocr", "imageseg", "imagerecog", "objectdet", "imageenhan"} <= {
        it.category for it in billable
    }
    assert catalog.lookup("ocr", "GetAsyncJobResult") is not None
    assert catalog.lookup("ocr", "GetAsyncJobResult").free  # type: ignore[union-attr]


def test_published_figures() -> None:
    catalog = default_catalog()
    face = catalog.lookup("facebody", "DetectFace")
    assert face is not None and not face.free
    tiers = face.prices[0].tiers
    assert (tiers[0].up_to, tiers[0].price) == (500_000, Decimal("0.0016"))
    assert (tiers[1].up_to, tiers[1].price) == (1_000_000, Decimal("0.0014"))
    plate = catalog.lookup("ocr", "RecognizeLicensePlate")
    assert plate is not None and not plate.estimated
    assert [t.price for t in plate.prices[0].tiers] == [
        Decimal("0.15"),
        Decimal("0.10"),
        Decimal("0.06"),
        Decimal("0.02"),
    ]
    assert plate.default_qps == 1  # OCR
    assert face.default_qps == 2 and face.max_qps == 50
    assert catalog.lookup("objectdet", "DetectObject").max_qps == 100  # type: ignore[union-attr]
    # Assumption: coefficient = first tier price / point value (CNY 0.01).
    assert plate.coefficient == Decimal("15")
    assert face.coefficient == Decimal("0.16")


def test_tier_positions() -> None:
    plate = default_catalog().lookup("ocr", "RecognizeLicensePlate")
    assert plate is not None
    schedule = plate.prices[0]
    assert [schedule.tier_index(n) for n in (1, 10_000, 10_001, 100_000, 100_001, 10**9)] == [
        0,
        0,
        1,
        1,
        2,
        3,
    ]


def test_ambiguous_pairs_are_reported_not_guessed() -> None:
    catalog = default_catalog()
    assert set(catalog.categories_for("GetAsyncJobResult", "2019-12-30")) == {"ocr", "imageseg"}
    assert catalog.categories_for("DetectFace", "2019-12-30") == ("facebody",)
    assert catalog.categories_for("DetectFace", "2019-09-30") == ()


def test_schedule_at_follows_effective_dates() -> None:
    doc = _default_doc()
    item = next(i for i in doc["items"] if i["action"] == "DetectFace")
    item["prices"].append(
        {
            "effective_from": datetime(2026, 6, 1, tzinfo=UTC),
            "tiers": [{"up_to": 10, "price": "0.002"}, {"price": "0.001"}],
        }
    )
    face = parse_catalog(doc).lookup("facebody", "DetectFace")
    assert face is not None
    assert face.schedule_at(datetime(2026, 5, 31, 23, 59, tzinfo=UTC)) is face.prices[0]
    assert face.schedule_at(datetime(2026, 6, 1, tzinfo=UTC)) is face.prices[1]
    assert face.schedule_at(datetime(2019, 1, 1, tzinfo=UTC)) is None


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["items"][0]["prices"][0]["tiers"][0].update(price=0.0016), "tiers[0].price"),
        (lambda d: d["items"][0]["prices"][0]["tiers"][0].update(price="abc"), "tiers[0].price"),
        (lambda d: d["items"][0]["prices"][0]["tiers"][1].update(up_to=5), "tiers[1].up_to"),
        (lambda d: d["items"][0]["prices"][0]["tiers"][-1].update(up_to=10**9), "up_to"),
        (lambda d: d["items"][0].update(category="nope"), "items[0].category"),
        (lambda d: d["items"][0].update(unit="minute"), "items[0].unit"),
        (lambda d: d["items"][1].update(action=d["items"][0]["action"]), "items[1].action"),
        (lambda d: d["items"][0]["prices"].clear(), "items[0].prices"),
        (lambda d: d["categories"]["ocr"].update(default_qps=0), "categories.ocr.default_qps"),
        (lambda d: d.update(point_value="0"), "point_value"),
        (lambda d: d["items"][0]["prices"][0].pop("effective_from"), "effective_from"),
    ],
)
def test_bad_catalogs_name_the_field(mutate: Any, field: str) -> None:
    doc = copy.deepcopy(_default_doc())
    mutate(doc)
    with pytest.raises(CatalogError) as info:
        parse_catalog(doc)
    assert field in str(info.value)


def test_load_catalog_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(
        'point_value = "0.01"\n'
        "[categories]\n"
        'ocr = { version = "2019-12-30", default_qps = 1 }\n'
        "[[items]]\n"
        'category = "ocr"\n'
        'action = "RecognizeCharacter"\n'
        'coefficient = "3"\n'
        "[[items.prices]]\n"
        "effective_from = 2026-01-01\n"
        'tiers = [ { up_to = 100, price = "0.05" }, { price = "0.01" } ]\n'
    )
    catalog = load_catalog(path)
    item = catalog.lookup("ocr", "RecognizeCharacter")
    assert item is not None
    assert item.coefficient == Decimal(3) and item.max_qps is None and item.default_qps == 1
    (tmp_path / "broken.toml").write_text("point_value = [")
    with pytest.raises(CatalogError, match="not valid TOML"):
        load_catalog(tmp_path / "broken.toml")
