"""What every operator-side handler (admin API, billing page, tenant view) works with.

One ``AdminContext`` per app: the SQLite ledger file, the ledger store (credentials), the
rating store beside it (plans, balances, standing, notices), the catalog, the clock, the
box that seals AccessKey secrets and the admin tokens. Build it from a running
:class:`~metering_middleware.runtime.MeteringRuntime` (the gateway mounts the admin app
beside the meter, sharing its clock, catalog and ledger store) or standalone from a ledger
URL (an admin server of its own on the same file).

Stores are opened lazily on first use, once (under a lock): an app served through
``httpx.ASGITransport`` or mounted inside another app runs no lifespan of its own, and must
work all the same. ``close()`` closes only what the context opened itself.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from ..catalog import Catalog, default_catalog, load_catalog
from ..clock import Clock, SystemClock
from ..config import ConfigError
from ..credentials import CredentialManager, SecretBox
from ..ledger import LedgerStore
from ..ledger.migrate import connect_existing
from ..ledger.urls import open_store
from ..stores.sqlite.ledger import SqliteStore
from ..stores.sqlite.rating import SqliteRatingStore
from .tokens import AdminTokens

if TYPE_CHECKING:
    from ..runtime import MeteringRuntime

__all__ = ["AdminContext"]

_T = TypeVar("_T")

#: The ``HostId`` of the admin API's error bodies.
ADMIN_HOST_ID = "metering-admin"


class AdminContext:
    """The shared parts of the operator's apps; see the module docstring."""

    def __init__(
        self,
        *,
        ledger_path: str | Path,
        store: LedgerStore,
        catalog: Catalog,
        clock: Clock,
        secret_box: SecretBox,
        tokens: AdminTokens,
        owns_store: bool = False,
        host_id: str = ADMIN_HOST_ID,
    ) -> None:
        self.ledger_path = Path(ledger_path)
        self.store = store
        self.catalog = catalog
        self.clock = clock
        self.secret_box = secret_box
        self.tokens = tokens
        self.host_id = host_id
        self._owns_store = owns_store
        self._store_open = not owns_store  # a runtime's store is the runtime's to open
        # ``create=False``: the admin side never creates a ledger, it manages one.
        self._ratings = SqliteRatingStore(self.ledger_path, create=False)
        self._ratings_open = False
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:  # never the tokens nor the secret box's keys
        return f"AdminContext({str(self.ledger_path)!r}, {self.tokens!r})"

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_runtime(cls, runtime: MeteringRuntime, tokens: AdminTokens) -> AdminContext:
        """Share a metering runtime's ledger store, catalog, clock and secret box.

        The runtime's store is started and stopped by the runtime; ``ConfigError`` for a
        ledger that is not an SQLite file (``memory://`` keeps no plans nor balances)."""
        store = runtime.store
        if not isinstance(store, SqliteStore):
            raise ConfigError("admin: the admin API needs an SQLite ledger (sqlite:///path)")
        return cls(
            ledger_path=store.path,
            store=store,
            catalog=runtime.catalog,
            clock=runtime.clock,
            secret_box=runtime.secret_box,
            tokens=tokens,
        )

    @classmethod
    def from_ledger_url(
        cls,
        url: str,
        tokens: AdminTokens,
        *,
        catalog: Catalog | str | Path | None = None,
        clock: Clock | None = None,
        secret_box: SecretBox | None = None,
    ) -> AdminContext:
        """A context of its own on an existing SQLite ledger (never created here).

        ``catalog``: a catalog, a catalog file, or None (the packaged one); ``secret_box``
        defaults to ``METERING_SECRET_KEY`` from the environment."""
        try:
            store = open_store(url, create=False)
        except ValueError as exc:
            raise ConfigError(f"admin: ledger URL: {exc}") from None
        if not isinstance(store, SqliteStore):
            raise ConfigError("admin: the admin API needs an SQLite ledger (sqlite:///path)")
        if catalog is None:
            catalog = default_catalog()
        elif not isinstance(catalog, Catalog):
            catalog = load_catalog(catalog)
        return cls(
            ledger_path=store.path,
            store=store,
            catalog=catalog,
            clock=clock or SystemClock(),
            secret_box=secret_box or SecretBox.from_env(),
            tokens=tokens,
            owns_store=True,
        )

    # -- stores ----------------------------------------------------------------------------

    async def ledger(self) -> LedgerStore:
        """The ledger store (credentials, calls), opened on first use when it is ours."""
        if not self._store_open:
            async with self._lock:
                if not self._store_open:
                    await self.store.open()
                    self._store_open = True
        return self.store

    async def ratings(self) -> SqliteRatingStore:
        """The rating store on the ledger file (plans, balances, standing), opened once."""
        if not self._ratings_open:
            async with self._lock:
                if not self._ratings_open:
                    await self._ratings.open()
                    self._ratings_open = True
        return self._ratings

    async def credentials(self) -> CredentialManager:
        """AccessKeys: create (the secret shown once), list, disable."""
        return CredentialManager(await self.ledger(), self.secret_box, self.clock)

    async def read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run a read-only query ``fn(conn)`` on the ledger file in a worker thread.

        A connection per call (opened ``query_only``, never creating the file): the
        reads that the stores do not offer (keyset pages over accounts, notices) stay off
        the event loop and can never write."""

        def run() -> _T:
            conn = connect_existing(self.ledger_path)
            try:
                conn.execute("PRAGMA query_only = ON")
                return fn(conn)
            finally:
                conn.close()

        return await asyncio.to_thread(run)

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Open both stores now (a start that fails early rather than at the first call)."""
        await self.ledger()
        await self.ratings()

    async def close(self) -> None:
        """Close what this context opened (a runtime's store stays the runtime's)."""
        async with self._lock:
            if self._ratings_open:
                self._ratings_open = False
                await self._ratings.close()
            if self._owns_store and self._store_open:
                self._store_open = False
                await self.store.close()

    async def __aenter__(self) -> AdminContext:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
