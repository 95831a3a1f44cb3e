"""Catalogs for tests that send bursts without testing QPS limits."""

from __future__ import annotations

import tomllib
from importlib import resources
from typing import Any

from metering_middleware.catalog import Catalog, parse_catalog


def roomy_catalog(default_qps: int = 1000) -> Catalog:
    """The packaged catalog with every category's default QPS raised to ``default_qps``."""
    return parse_catalog(roomy_document(default_qps))


def roomy_document(default_qps: int = 1000) -> dict[str, Any]:
    """The packaged catalog's TOML document, every category's default QPS raised."""
    text = (
        resources.files("metering_middleware.catalog")
        .joinpath("default_catalog.toml")
        .read_text("utf-8")
    )
    doc = tomllib.loads(text)
    for category in doc["categories"].values():
        category["default_qps"] = default_qps
    return doc
