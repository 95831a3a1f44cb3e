from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .harness import Env, make_env


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
