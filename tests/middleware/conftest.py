from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from metering_middleware._compiled import compiled_modules

from .harness import Env, make_env


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "pure_python: patches a hot module's internals, which a compiled (mypyc) module "
        "calls directly: runs over the pure-Python modules only",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not compiled_modules():
        return
    skip = pytest.mark.skip(reason="the hot modules are compiled (mypyc): nothing to patch")
    for item in items:
        if item.get_closest_marker("pure_python") is not None:
            item.add_marker(skip)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = await make_env()
    yield e
    await e.runtime.stop()


@pytest.fixture
async def batched_env() -> AsyncIterator[Env]:
    e = await make_env(mode="batched", flush_interval=3600.0)
    yield e
    await e.runtime.stop()
