"""What the report layer refuses, each with a precise code for the HTTP faces.

Every one is a ``ValueError`` (the CLI prints it in one line, exit 1) and carries the
Alibaba-style ``code`` the admin API and the tenant view answer with (status 400, or 404
for ``UnknownAccount``), so all faces refuse the same input with the same words.
"""

from __future__ import annotations

__all__ = ["BadRange", "ReportError", "UnknownAccount", "UnknownMonth"]


class ReportError(ValueError):
    """A report that cannot be made from this input (nothing was read or written)."""

    code = "InvalidParameter"
    status = 400


class UnknownAccount(ReportError):
    """No AccessKey was ever created for the account and it has no balance or plan."""

    code = "Account.NotFound"
    status = 404


class BadRange(ReportError):
    """A time range that is empty, reversed, naive, or not on whole minutes."""

    code = "InvalidParameter.Range"


class UnknownMonth(ReportError):
    """A billing month that is malformed or has not started yet."""

    code = "InvalidParameter.Month"
