"""Which accounts exist, by the same rule everywhere (private).

An account is known when an AccessKey was ever created for it, or it has balance
entries or plans (an operator may top up or sell a plan before issuing keys). Every
report starts by checking this, so a typo is ``UnknownAccount``, never an empty report
that looks like an idle tenant.
"""

from __future__ import annotations

import sqlite3

from .errors import UnknownAccount

__all__ = ["KNOWN_ACCOUNTS_SQL", "require_account", "unknown_account"]

#: Every known account, once (UNION deduplicates).
KNOWN_ACCOUNTS_SQL = (
    "SELECT account FROM credentials UNION SELECT account FROM balance_entries"
    " UNION SELECT account FROM rating_plans"
)


def require_account(conn: sqlite3.Connection, account: str) -> None:
    """Raise ``UnknownAccount`` unless ``account`` is known (exact, case-sensitive)."""
    for table in ("credentials", "balance_entries", "rating_plans"):
        if conn.execute(f"SELECT 1 FROM {table} WHERE account = ? LIMIT 1", (account,)).fetchone():
            return
    raise unknown_account(account)


def unknown_account(account: str) -> UnknownAccount:
    """The refusal of an unknown account, in the same words on every backend."""
    return UnknownAccount(f"no account {account!r} (no AccessKey, balance or plan)")
