"""The accounts' AccessKeys: secrets at rest, management, and the request path's cache.

Secrets are stored ``fernet:<token>`` when ``METERING_SECRET_KEY`` holds a
Fernet key (several, comma-separated, rotate: the first encrypts, all
decrypt), else ``plain:<secret>`` with a logged warning. The request path
never queries the store per call: ``CredentialCache`` serves a decrypted
snapshot and reloads it at most once per ``refresh_interval``.
"""

from __future__ import annotations

import logging
import os
import secrets
import string
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from ._compiled import mypyc_attr
from .clock import Clock
from .ledger.store import CredentialRow
from .reload import BackgroundReload

__all__ = [
    "SECRET_KEY_ENV",
    "Credential",
    "CredentialCache",
    "CredentialInfo",
    "CredentialManager",
    "CredentialStore",
    "SecretBox",
    "SecretBoxError",
    "generate_access_key",
]

log = logging.getLogger(__name__)

SECRET_KEY_ENV = "METERING_SECRET_KEY"
_BASE62 = string.ascii_letters + string.digits
_PLAIN = "plain:"
_FERNET = "fernet:"


class CredentialStore(Protocol):
    """The credential methods of ``LedgerStore`` (any ledger store is one)."""

    async def add_credential(self, row: CredentialRow) -> None: ...

    async def list_credentials(self, *, account: str | None = None) -> list[CredentialRow]: ...

    async def set_credential_enabled(
        self, access_key_id: str, enabled: bool, when: datetime
    ) -> bool: ...


class SecretBoxError(Exception):
    """A stored secret cannot be opened (no key, wrong key, unknown format) or a key is bad."""


# Open to Python subclasses when compiled (tests count the secrets a subclass opens).
@mypyc_attr(allow_interpreted_subclasses=True)
class SecretBox:
    """Seals secrets for storage and opens them again."""

    __slots__ = ("_fernet", "_warned")

    def __init__(self, keys: str | Sequence[str] | None = None) -> None:
        """``keys``: one Fernet key, several (comma-separated or a sequence), or None (plain)."""
        if isinstance(keys, str):
            keys = keys.split(",")
        cleaned = [k.strip() for k in keys or () if k.strip()]
        try:
            self._fernet = MultiFernet([Fernet(k) for k in cleaned]) if cleaned else None
        except (ValueError, TypeError) as exc:
            raise SecretBoxError(
                f"{SECRET_KEY_ENV} must be Fernet keys (32 url-safe base64 bytes), "
                f"comma-separated: {exc}"
            ) from None
        self._warned = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SecretBox:
        env = os.environ if environ is None else environ
        return cls(env.get(SECRET_KEY_ENV) or None)

    @property
    def encrypting(self) -> bool:
        return self._fernet is not None

    def seal(self, secret: str) -> str:
        if self._fernet is None:
            if not self._warned:
                self._warned = True
                log.warning(
                    "%s is not set: AccessKey secrets are stored in plain text", SECRET_KEY_ENV
                )
            return _PLAIN + secret
        return _FERNET + self._fernet.encrypt(secret.encode()).decode()

    def open(self, stored: str) -> str:
        if stored.startswith(_PLAIN):
            return stored[len(_PLAIN) :]
        if not stored.startswith(_FERNET):
            raise SecretBoxError("stored secret has no 'plain:' or 'fernet:' prefix")
        if self._fernet is None:
            raise SecretBoxError(
                f"secret is encrypted but {SECRET_KEY_ENV} is not set: set the key it was "
                "sealed with"
            )
        try:
            return self._fernet.decrypt(stored[len(_FERNET) :].encode()).decode()
        except InvalidToken:
            raise SecretBoxError(
                f"secret cannot be decrypted with {SECRET_KEY_ENV}: wrong key, or the key "
                "it was sealed with was rotated out"
            ) from None


def generate_access_key() -> tuple[str, str]:
    """A new (AccessKeyId, secret): ``LTAI`` + 20 base62 characters, and 30 base62."""
    key_id = "LTAI" + "".join(secrets.choice(_BASE62) for _ in range(20))
    return key_id, "".join(secrets.choice(_BASE62) for _ in range(30))


@dataclass(frozen=True, slots=True)
class CredentialInfo:
    """A credential as shown to operators: never its secret."""

    access_key_id: str
    account: str
    enabled: bool
    created_at: datetime
    disabled_at: datetime | None


@dataclass(frozen=True, slots=True)
class Credential:
    """A credential as the request path needs it (secret in plain text, in memory only)."""

    access_key_id: str
    account: str
    secret: str
    enabled: bool

    def __repr__(self) -> str:  # keep secrets out of logs and tracebacks
        return (
            f"Credential(access_key_id={self.access_key_id!r}, account={self.account!r}, "
            f"enabled={self.enabled!r})"
        )


def _name(account: str) -> str:
    """An account name as the request path keeps it: interned, so the money view's
    snapshot (which interns its names too) finds it by identity, not by comparing text."""
    return sys.intern(account)


def _info(row: CredentialRow) -> CredentialInfo:
    return CredentialInfo(
        row.access_key_id, row.account, row.enabled, row.created_at, row.disabled_at
    )


class CredentialManager:
    """Adds, lists and disables AccessKeys (the CLI's and admin API's side)."""

    __slots__ = ("_box", "_clock", "_store")

    def __init__(self, store: CredentialStore, box: SecretBox, clock: Clock) -> None:
        self._store = store
        self._box = box
        self._clock = clock

    async def add(
        self, account: str, secret: str | None = None, *, access_key_id: str | None = None
    ) -> tuple[CredentialRow, str]:
        """Store a new key for ``account``; return its row and the plain secret (shown once).

        Without ``secret`` (and ``access_key_id``) a fresh pair is generated; give
        them to import an existing key. Raises ``ValueError`` if the id exists.
        """
        if not account:
            raise ValueError("account must not be empty")
        if secret == "" or access_key_id == "":
            raise ValueError("secret and access_key_id must not be empty")
        new_id, new_secret = generate_access_key()
        plain = secret if secret is not None else new_secret
        row = CredentialRow(
            access_key_id=access_key_id or new_id,
            account=account,
            secret=self._box.seal(plain),
            enabled=True,
            created_at=self._clock.now(),
        )
        await self._store.add_credential(row)
        return row, plain

    async def list(self, account: str | None = None) -> list[CredentialInfo]:
        return [_info(r) for r in await self._store.list_credentials(account=account)]

    async def disable(self, access_key_id_or_account: str) -> int:
        """Disable one key (by AccessKeyId) or every key of an account; return how many.

        An AccessKeyId match wins over an account of the same name. Keys already
        disabled are not counted.
        """
        return await self._set_enabled(access_key_id_or_account, False)

    async def enable(self, access_key_id_or_account: str) -> int:
        """The reverse of ``disable``."""
        return await self._set_enabled(access_key_id_or_account, True)

    async def _set_enabled(self, target: str, enabled: bool) -> int:
        rows = await self._store.list_credentials()
        chosen = [r for r in rows if r.access_key_id == target] or [
            r for r in rows if r.account == target
        ]
        when = self._clock.now()
        count = 0
        for row in chosen:
            if row.enabled != enabled and await self._store.set_credential_enabled(
                row.access_key_id, enabled, when
            ):
                count += 1
        return count


class CredentialCache:
    """The request path's view of the credentials: a snapshot, refreshed in the background.

    - The first lookup waits for the first load (and raises if it fails).
    - A hit on a snapshot older than ``refresh_interval`` answers from it and starts
      one reload; a disabled key therefore stops working within about one interval.
    - A miss waits for a reload only if one is running or the last attempt is at
      least an interval old: unknown keys cost at most one reload per interval.
    - One reload at a time; every caller that waits shares it. A failed reload is
      logged, the old snapshot stays, and the next attempt comes an interval later.
    - Secrets are decrypted at reload, and only for rows that changed.
    """

    __slots__ = ("_box", "_loaded", "_reload", "_snapshot", "_store", "_unreadable")

    def __init__(
        self, store: CredentialStore, box: SecretBox, clock: Clock, *, refresh_interval: float = 1.0
    ) -> None:
        self._store = store
        self._box = box
        # access_key_id -> (stored secret text, credential): the text spots changed rows.
        self._snapshot: dict[str, tuple[str, Credential]] = {}
        self._loaded = False
        self._unreadable = 0
        self._reload = BackgroundReload(self._load, clock, refresh_interval, "credential")

    def cached(self, access_key_id: str) -> Credential | None:
        """A hit on the loaded snapshot, at once (no await: the meter's fast path).

        ``None`` for a miss or before the first load: ``lookup`` decides those (it may
        wait for a reload). A hit is exactly ``lookup``'s answer for it.
        """
        if not self._loaded:
            return None
        entry = self._snapshot.get(access_key_id)
        if entry is None:
            return None
        self._reload.start_if_due()  # stale: answer from the snapshot, reload behind
        return entry[1]

    async def lookup(self, access_key_id: str) -> Credential | None:
        if not self._loaded:
            await self.refresh()
        found = self.cached(access_key_id)
        if found is not None:
            return found
        reload = self._reload
        if not reload.running and not reload.due():
            return None  # negative cache: asked the store less than an interval ago
        try:
            await reload.wait()
        except Exception:
            return None  # logged by the reload; the key is unknown as far as we know
        entry = self._snapshot.get(access_key_id)
        return entry[1] if entry is not None else None

    async def refresh(self) -> None:
        """Reload now (or join the reload already running); raise what it raised."""
        await self._reload.wait()

    async def join(self) -> None:
        """Wait for a background reload, if one is running (tests, shutdown); never raises."""
        await self._reload.join()

    def __len__(self) -> int:
        return len(self._snapshot)

    async def _load(self) -> None:
        rows = await self._store.list_credentials()
        old = self._snapshot
        new: dict[str, tuple[str, Credential]] = {}
        unreadable = 0
        for row in rows:
            prev = old.get(row.access_key_id)
            if prev is not None and prev[0] == row.secret:
                cred = prev[1]
                if cred.enabled != row.enabled or cred.account != row.account:
                    account = _name(row.account)
                    cred = Credential(row.access_key_id, account, cred.secret, row.enabled)
            else:
                try:
                    plain = self._box.open(row.secret)
                except SecretBoxError:
                    unreadable += 1
                    continue
                cred = Credential(row.access_key_id, _name(row.account), plain, row.enabled)
            new[row.access_key_id] = (row.secret, cred)
        if unreadable != self._unreadable:  # log changes, not every reload
            self._unreadable = unreadable
            log.error(
                "%d AccessKey secret(s) cannot be opened (check %s); those keys are refused",
                unreadable,
                SECRET_KEY_ENV,
            )
        self._snapshot = new
        self._loaded = True
