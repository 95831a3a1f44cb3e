"""An AccessKey's secret is in its create answer only: never in a later answer, stored
sealed, and the key it belongs to works."""

from __future__ import annotations

import sqlite3

from metering_middleware.credentials import CredentialManager
from metering_middleware.stores.sqlite.ledger import SqliteStore

from .conftest import Admin, auth
from .samples import samples


async def test_the_secret_is_shown_once_and_never_again(admin: Admin) -> None:
    h = auth()
    created = await admin.client.post("/accounts/carol/keys", headers=h)
    assert created.status_code == 201
    key = created.json()
    secret, key_id = key["secret"], key["access_key_id"]
    assert key["account"] == "carol" and key["enabled"] is True and len(secret) == 30
    # Every other answer of the API, on every route (lists, shows, notices, the document).
    seen = []
    for s in samples(admin):
        r = await admin.client.request(s.method, s.path, json=s.json, headers=h)
        if s.template != "/accounts/{account}/keys" or s.method != "POST":
            seen.append(r.text)  # (that one creates a key of its own, with its own secret)
    for path in (
        "/accounts/carol",
        "/accounts/carol/keys",
        f"/keys/{key_id}",
        "/notices?account=carol",
        "/accounts?search=car",
    ):
        r = await admin.client.get(path, headers=h)
        assert r.status_code == 200, path
        assert key_id in r.text or path.startswith("/notices") or path.startswith("/accounts?")
        seen.append(r.text)
    seen.append((await admin.client.post(f"/keys/{key_id}/disable", headers=h)).text)
    for text in seen:
        assert secret not in text
        assert '"secret"' not in text or "KeyCreated" in text  # only the document names it
    # Stored sealed (Fernet), never in plain text.
    with sqlite3.connect(admin.db) as conn:
        (stored,) = conn.execute(
            "SELECT secret FROM credentials WHERE access_key_id = ?", (key_id,)
        ).fetchone()
    assert stored.startswith("fernet:") and secret not in stored
    assert admin.box.open(stored) == secret


async def test_created_keys_belong_to_their_account_and_disable_stops_them(admin: Admin) -> None:
    h = auth()
    key_id = (await admin.client.post("/accounts/alice/keys", headers=h)).json()["access_key_id"]
    shown = (await admin.client.get("/accounts/alice", headers=h)).json()
    assert key_id in [k["access_key_id"] for k in shown["keys"]]
    off = await admin.client.post(f"/keys/{key_id}/disable", headers=h)
    assert off.json()["enabled"] is False and off.json()["disabled_at"] == "2026-03-10T04:00:00Z"
    async with SqliteStore(admin.db) as store:
        infos = await CredentialManager(store, admin.box, admin.clock).list("alice")
    assert {i.access_key_id: i.enabled for i in infos} == {admin.alice_key: True, key_id: False}
    again = await admin.client.post(f"/keys/{key_id}/enable", headers=h)
    assert again.json()["enabled"] is True


async def test_key_lists_page_without_loss_or_repeat(admin: Admin) -> None:
    h = auth()
    made = {admin.alice_key}
    for _ in range(4):
        admin.clock.advance(1)
        made.add(
            (await admin.client.post("/accounts/alice/keys", headers=h)).json()["access_key_id"]
        )
    got: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await admin.client.get("/accounts/alice/keys", params=params, headers=h)).json()
        got += [k["access_key_id"] for k in page["items"]]
        assert all("secret" not in k for k in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(got) == len(set(got)) == 5 and set(got) == made
