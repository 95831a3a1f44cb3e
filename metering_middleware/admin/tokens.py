"""Admin bearer tokens: several at once (rotation), 32+ characters, compared in constant time.

A token is a shared secret like an AccessKey secret: it is read from the environment or a
file (never a command-line argument), never logged and never returned by the API. Every
configured token is compared on every check, each with :func:`hmac.compare_digest`, so the
time a check takes tells nothing about which token (or which prefix of one) came close.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

__all__ = ["MIN_TOKEN_LENGTH", "AdminTokens", "TokenError"]

#: 32 characters of a random token carry far more than 128 bits; shorter ones are refused.
MIN_TOKEN_LENGTH = 32


class TokenError(ValueError):
    """A configured token is unusable (too short, blank, or none configured)."""


class AdminTokens:
    """The tokens accepted now. Rotate by configuring the new one beside the old, then
    removing the old one: both work in between."""

    __slots__ = ("_tokens",)

    def __init__(self, tokens: Iterable[str]) -> None:
        kept: list[bytes] = []
        for n, token in enumerate(tokens, 1):
            token = token.strip()
            if len(token) < MIN_TOKEN_LENGTH:
                raise TokenError(
                    f"admin token #{n} has {len(token)} characters; "
                    f"at least {MIN_TOKEN_LENGTH} are needed"
                )
            if any(c.isspace() for c in token) or not token.isprintable():
                raise TokenError(f"admin token #{n} contains spaces or control characters")
            kept.append(token.encode())
        if not kept:
            raise TokenError("no admin token configured")
        self._tokens = tuple(kept)

    @classmethod
    def parse(cls, text: str) -> AdminTokens:
        """Tokens from one text: separated by commas or newlines (an env variable or a file);
        blank lines and lines starting with ``#`` are ignored."""
        parts = [p.strip() for line in text.splitlines() for p in line.split(",")]
        return cls(p for p in parts if p and not p.startswith("#"))

    def __len__(self) -> int:
        return len(self._tokens)

    def __repr__(self) -> str:  # never the tokens themselves
        return f"AdminTokens({len(self._tokens)} token(s))"

    def matches(self, presented: str | bytes | None) -> bool:
        """True when ``presented`` is one of the tokens; constant time in which one."""
        if presented is None:
            return False
        candidate = presented.encode() if isinstance(presented, str) else presented
        found = False
        for token in self._tokens:
            # No early exit: every token is compared whatever the outcome of the others.
            found |= hmac.compare_digest(candidate, token)
        return found

    def match_index(self, presented: str | bytes | None) -> int | None:
        """Which token ``presented`` is (its position), or None; constant time in which
        one, like :meth:`matches`."""
        if presented is None:
            return None
        candidate = presented.encode() if isinstance(presented, str) else presented
        found: int | None = None
        for n, token in enumerate(self._tokens):
            if hmac.compare_digest(candidate, token):
                found = n  # no early exit: every token is compared
        return found

    def derive_keys(self, purpose: str) -> tuple[bytes, ...]:
        """One key for ``purpose`` per token, in the tokens' order (HMAC-SHA256 of the
        token's digest): what one token signed stays valid exactly as long as that
        token is configured, whatever tokens are added or removed beside it."""
        return tuple(
            hmac.new(
                b"metering-admin-token:" + purpose.encode(),
                hashlib.sha256(token).digest(),
                hashlib.sha256,
            ).digest()
            for token in self._tokens
        )

    def bearer(self, authorization: str | bytes | None) -> bool:
        """True for an ``Authorization: Bearer <token>`` header value carrying a token."""
        if authorization is None:
            return False
        value = authorization
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return self.matches(token.strip())

    def derive_key(self, purpose: str) -> bytes:
        """A key for ``purpose`` (e.g. signing pagination cursors) derived from all tokens.

        Every process configured with the same tokens derives the same key, so what one
        signs another accepts; rotating the tokens changes it (old cursors are refused).
        The tokens cannot be recovered from it (HMAC-SHA256)."""
        mac = hmac.new(b"metering-admin:" + purpose.encode(), digestmod=hashlib.sha256)
        for token in sorted(self._tokens):
            mac.update(hashlib.sha256(token).digest())
        return mac.digest()
