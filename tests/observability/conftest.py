"""Real log output captured: a stdlib handler with the meter's JsonFormatter."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from metering_middleware.logs import LOGGER, JsonFormatter


class JsonLines:
    """What a JSON handler on the ``metering_middleware`` logger wrote, parsed."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def all(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines()]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.all() if line["event"] == name]


@pytest.fixture
def json_lines() -> Iterator[JsonLines]:
    lines = JsonLines()
    handler = logging.StreamHandler(lines.stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(LOGGER)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)  # everything: a line that should not be there shows
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
