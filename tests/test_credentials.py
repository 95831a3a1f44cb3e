"""Credentials: secrets at rest, management, and the request path's cache."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, replace
from datetime import datetime

import pytest
from cryptography.fernet import Fernet

from metering_middleware.clock import ManualClock
from metering_middleware.credentials import (
    SECRET_KEY_ENV,
    Credential,
    CredentialCache,
    CredentialManager,
    SecretBox,
    SecretBoxError,
    generate_access_key,
)
from metering_middleware.ledger.store import CredentialRow, StoreError


class FakeStore:
    """The three credential methods of ``LedgerStore``, in memory, with a query counter."""

    def __init__(self) -> None:
        self.rows: dict[str, CredentialRow] = {}
        self.queries = 0
        self.fail = False
        self.gate: asyncio.Event | None = None  # when set, list_credentials waits on it
        self.entered = asyncio.Event()

    async def add_credential(self, row: CredentialRow) -> None:
        if row.access_key_id in self.rows:
            raise ValueError(f"AccessKeyId {row.access_key_id} exists")
        self.rows[row.access_key_id] = row

    async def list_credentials(self, *, account: str | None = None) -> list[CredentialRow]:
        self.queries += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise StoreError("database is locked")
        return [r for r in self.rows.values() if account is None or r.account == account]

    async def set_credential_enabled(
        self, access_key_id: str, enabled: bool, when: datetime
    ) -> bool:
        row = self.rows.get(access_key_id)
        if row is None:
            return False
        self.rows[access_key_id] = replace(
            row, enabled=enabled, disabled_at=None if enabled else when
        )
        return True


class CountingBox(SecretBox):
    __slots__ = ("opened",)

    def __init__(self, keys: str | None = None) -> None:
        super().__init__(keys)
        self.opened = 0

    def open(self, stored: str) -> str:
        self.opened += 1
        return super().open(stored)


def new_key() -> str:
    return Fernet.generate_key().decode()


# --- SecretBox ------------------------------------------------------------------------------


def test_plain_box_stores_plain_text_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    box = SecretBox(None)
    with caplog.at_level(logging.WARNING, logger="metering_middleware.credentials"):
        assert box.seal("s3cret") == "plain:s3cret"
        assert box.seal("other") == "plain:other"
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert SECRET_KEY_ENV in caplog.records[0].getMessage()
    assert box.open("plain:s3cret") == "s3cret"
    assert not box.encrypting


def test_fernet_box_encrypts_at_rest() -> None:
    box = SecretBox(new_key())
    stored = box.seal("s3cret-value")
    assert stored.startswith("fernet:")
    assert "s3cret-value" not in stored
    assert box.open(stored) == "s3cret-value"
    assert box.open("plain:legacy") == "legacy"  # rows stored before a key was set still open


def test_box_from_env() -> None:
    assert SecretBox.from_env({SECRET_KEY_ENV: new_key()}).encrypting
    assert not SecretBox.from_env({}).encrypting
    assert not SecretBox.from_env({SECRET_KEY_ENV: ""}).encrypting


def test_wrong_or_missing_key_is_a_clear_error() -> None:
    stored = SecretBox(new_key()).seal("s")
    with pytest.raises(SecretBoxError, match="wrong key"):
        SecretBox(new_key()).open(stored)
    with pytest.raises(SecretBoxError, match=f"{SECRET_KEY_ENV} is not set"):
        SecretBox(None).open(stored)
    with pytest.raises(SecretBoxError, match="prefix"):
        SecretBox(None).open("s")
    with pytest.raises(SecretBoxError, match=SECRET_KEY_ENV):
        SecretBox("not-a-fernet-key")


def test_key_rotation_first_key_encrypts_all_decrypt() -> None:
    old, new = new_key(), new_key()
    stored_old = SecretBox(old).seal("a")
    rotating = SecretBox(f"{new}, {old}")
    assert rotating.open(stored_old) == "a"
    stored_new = rotating.seal("b")
    assert SecretBox(new).open(stored_new) == "b"
    with pytest.raises(SecretBoxError):
        SecretBox(old).open(stored_new)


def test_generated_access_keys() -> None:
    pairs = {generate_access_key() for _ in range(20)}
    assert len(pairs) == 20
    for key_id, secret in pairs:
        assert re.fullmatch(r"LTAI[A-Za-z0-9]{20}", key_id)
        assert re.fullmatch(r"[A-Za-z0-9]{30}", secret)


# --- CredentialManager ----------------------------------------------------------------------


async def test_add_generates_and_returns_the_secret_once() -> None:
    store, box, clock = FakeStore(), SecretBox(new_key()), ManualClock()
    manager = CredentialManager(store, box, clock)
    row, secret = await manager.add("acme")
    assert (row.account, row.enabled, row.created_at) == ("acme", True, clock.now())
    assert store.rows[row.access_key_id] == row
    assert secret not in row.secret
    assert box.open(row.secret) == secret


async def test_add_imports_a_given_key_and_refuses_duplicates() -> None:
    manager = CredentialManager(FakeStore(), SecretBox(None), ManualClock())
    row, secret = await manager.add("acme", "given-secret", access_key_id="LTAIimported")
    assert (row.access_key_id, secret, row.secret) == (
        "LTAIimported",
        "given-secret",
        "plain:given-secret",
    )
    with pytest.raises(ValueError, match="exists"):
        await manager.add("other", access_key_id="LTAIimported")
    with pytest.raises(ValueError, match="account"):
        await manager.add("")
    with pytest.raises(ValueError, match="empty"):
        await manager.add("acme", "")


async def test_list_never_shows_secrets() -> None:
    manager = CredentialManager(FakeStore(), SecretBox(None), ManualClock())
    await manager.add("acme")
    await manager.add("acme")
    await manager.add("globex")
    infos = await manager.list()
    assert len(infos) == 3
    assert all(not hasattr(i, "secret") for i in infos)
    assert {i.account for i in await manager.list("acme")} == {"acme"}


async def test_disable_by_key_or_account() -> None:
    store, clock = FakeStore(), ManualClock()
    manager = CredentialManager(store, SecretBox(None), clock)
    a1, _ = await manager.add("acme")
    await manager.add("acme")
    await manager.add("acme")
    g, _ = await manager.add("globex")
    clock.advance(60)
    assert await manager.disable(a1.access_key_id) == 1
    assert store.rows[a1.access_key_id].disabled_at == clock.now()
    assert await manager.disable(a1.access_key_id) == 0  # already disabled: not counted
    assert await manager.disable("acme") == 2
    assert await manager.disable("nobody") == 0
    assert store.rows[g.access_key_id].enabled
    assert await manager.enable("acme") == 3
    assert all(r.enabled for r in store.rows.values())


# --- CredentialCache ------------------------------------------------------------------------


@dataclass
class World:
    store: FakeStore
    box: SecretBox
    clock: ManualClock
    manager: CredentialManager
    rows: list[tuple[CredentialRow, str]]

    def cache(self, refresh_interval: float = 1.0) -> CredentialCache:
        return CredentialCache(self.store, self.box, self.clock, refresh_interval=refresh_interval)


async def world(box: SecretBox | None = None) -> World:
    store, clock, box = FakeStore(), ManualClock(), box or SecretBox(new_key())
    manager = CredentialManager(store, box, clock)
    rows = [await manager.add(f"acct{i}") for i in range(2)]
    return World(store, box, clock, manager, rows)


async def found(cache: CredentialCache, access_key_id: str) -> Credential:
    cred = await cache.lookup(access_key_id)
    assert cred is not None
    return cred


async def test_lookup_serves_a_snapshot_without_a_query_per_call() -> None:
    w = await world()
    (row, secret), _ = w.rows
    cache = w.cache()
    for _ in range(50):
        cred = await found(cache, row.access_key_id)
        assert (cred.account, cred.secret, cred.enabled) == ("acct0", secret, True)
    assert w.store.queries == 1
    assert secret not in repr(cred)


async def test_a_stale_hit_answers_at_once_and_refreshes_in_the_background() -> None:
    w = await world()
    row = w.rows[0][0]
    cache = w.cache(refresh_interval=1.0)
    await cache.refresh()
    await w.manager.disable(row.access_key_id)
    before = w.store.queries
    w.clock.advance(0.9)
    assert (await found(cache, row.access_key_id)).enabled
    assert w.store.queries == before
    w.clock.advance(0.1)
    for _ in range(5):  # answered from the old snapshot; one reload started for all of them
        assert (await found(cache, row.access_key_id)).enabled
    await cache.join()
    assert w.store.queries == before + 1
    assert not (await found(cache, row.access_key_id)).enabled


async def test_unknown_keys_cost_at_most_one_reload_per_interval() -> None:
    w = await world()
    cache = w.cache(refresh_interval=1.0)
    await cache.refresh()
    for _ in range(100):
        assert await cache.lookup("LTAIbogus") is None
    assert w.store.queries == 1
    w.clock.advance(1.0)
    results = await asyncio.gather(*(cache.lookup(f"LTAIbogus{i}") for i in range(20)))
    assert results == [None] * 20
    assert w.store.queries == 2
    for _ in range(100):
        assert await cache.lookup("LTAIbogus") is None
    assert w.store.queries == 2


async def test_a_new_key_is_found_by_a_miss_once_the_interval_passed() -> None:
    w = await world()
    cache = w.cache(refresh_interval=1.0)
    await cache.refresh()
    row, secret = await w.manager.add("newcomer")
    assert await cache.lookup(row.access_key_id) is None  # negative-cached for this interval
    w.clock.advance(1.0)
    assert (await found(cache, row.access_key_id)).secret == secret


async def test_concurrent_callers_share_one_reload() -> None:
    w = await world()
    row = w.rows[0][0]
    cache = w.cache()
    w.store.gate = asyncio.Event()
    waiting = [asyncio.ensure_future(cache.lookup(row.access_key_id)) for _ in range(10)]
    await w.store.entered.wait()  # the reload is held inside the store
    w.store.gate.set()
    assert all(c is not None for c in await asyncio.gather(*waiting))
    assert w.store.queries == 1


async def test_a_failed_reload_keeps_the_snapshot_and_waits_an_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    w = await world()
    row = w.rows[0][0]
    cache = w.cache(refresh_interval=1.0)
    await cache.refresh()
    w.store.fail = True
    w.clock.advance(1.0)
    with caplog.at_level(logging.WARNING, logger="metering_middleware.credentials"):
        await found(cache, row.access_key_id)
        await cache.join()
        assert await cache.lookup("LTAIbogus") is None  # no new attempt within the interval
        await found(cache, row.access_key_id)
    assert w.store.queries == 2
    assert "reload failed" in caplog.text
    w.clock.advance(1.0)
    assert await cache.lookup("LTAIbogus") is None  # a miss after the interval tries again
    assert w.store.queries == 3
    with pytest.raises(StoreError):
        await cache.refresh()  # a forced refresh reports its failure
    w.store.fail = False
    await w.manager.disable(row.access_key_id)
    await cache.refresh()
    assert not (await found(cache, row.access_key_id)).enabled


async def test_the_first_load_failing_is_raised() -> None:
    w = await world()
    w.store.fail = True
    with pytest.raises(StoreError):
        await w.cache().lookup(w.rows[0][0].access_key_id)


async def test_secrets_are_decrypted_at_reload_and_only_when_changed() -> None:
    box = CountingBox(new_key())
    w = await world(box)
    row = w.rows[0][0]
    cache = w.cache()
    await cache.refresh()
    assert box.opened == 2
    for _ in range(10):
        await found(cache, row.access_key_id)
    assert box.opened == 2
    await w.manager.disable(row.access_key_id)
    await w.manager.add("third")
    await cache.refresh()
    assert box.opened == 3  # only the new row; the disabled one kept its decrypted secret
    assert not (await found(cache, row.access_key_id)).enabled
    assert len(cache) == 3


async def test_rows_that_cannot_be_opened_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    w = await world()
    plain_row, plain_secret = await CredentialManager(w.store, SecretBox(None), w.clock).add("p")
    cache = CredentialCache(w.store, SecretBox(new_key()), w.clock)  # the wrong key
    with caplog.at_level(logging.ERROR, logger="metering_middleware.credentials"):
        await cache.refresh()
    assert await cache.lookup(w.rows[0][0].access_key_id) is None
    assert (await found(cache, plain_row.access_key_id)).secret == plain_secret
    assert "2 AccessKey secret(s) cannot be opened" in caplog.text
