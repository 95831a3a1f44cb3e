"""Signed, expiring session cookies whose key dies with the admin token that made them.

A browser signs in once with an admin token; from then on it carries a cookie

    v1.<session id>.<issued, unix s>.<expires, unix s>.<HMAC-SHA256, base64url>

signed with the key derived from the admin token it signed in with
(``AdminTokens.derive_keys``: one key per token), never a token itself. A cookie is
accepted only while a key of the tokens configured *now* verifies it: rotating a token out
ends the sessions made with it, in every gateway process, without any shared session
store, and only those (adding the new token first, then removing the old one, signs in
again only the operators of the old one). Keys are compared with
:func:`hmac.compare_digest`, each of them, without an early exit.

Hand-written rather than itsdangerous: the format is one HMAC over five fields, and the
property that matters (the key dies with its token) is this module's whole point; a
serializer library would add a dependency and hide it.

The CSRF token of a session is derived from the same key and the session id: it needs no
storage, differs per session, and is compared in constant time (``csrf_matches``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from ...clock import Clock

__all__ = ["DEFAULT_LIFETIME", "Session", "SessionCodec"]

DEFAULT_LIFETIME = timedelta(hours=8)
_VERSION = "v1"
_CSRF = b"csrf\x00"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _mac(key: bytes, body: str) -> bytes:
    return hmac.new(key, body.encode(), hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    issued: int
    expires: int
    csrf: str  # the token every state-changing form of this session must carry

    def csrf_matches(self, presented: str | None) -> bool:
        if not presented:
            return False
        return hmac.compare_digest(presented.encode(), self.csrf.encode())


class SessionCodec:
    """Makes and reads session cookies. ``keys`` gives the keys valid now, the signing one
    first (called on every use, so a live change of the token set applies at once)."""

    __slots__ = ("_clock", "_keys", "_lifetime", "_revoked")

    def __init__(
        self,
        keys: Callable[[], Sequence[bytes]],
        clock: Clock,
        *,
        lifetime: timedelta = DEFAULT_LIFETIME,
    ) -> None:
        if lifetime <= timedelta(0):
            raise ValueError("a session lifetime must be positive")
        self._keys = keys
        self._clock = clock
        self._lifetime = lifetime
        # Signed-out session ids until they expire anyway (this process only: the browser
        # drops its cookie on sign-out, and the cookie expires on its own everywhere).
        self._revoked: dict[str, int] = {}

    @property
    def lifetime(self) -> timedelta:
        return self._lifetime

    def issue(self, key: bytes | None = None) -> tuple[str, Session]:
        """A new session, signed with ``key`` (the key of the token that signed in; by
        default the first key valid now). Call it once the token matched."""
        if key is None:
            key = self._keys()[0]
        now = int(self._clock.now().timestamp())
        sid = secrets.token_urlsafe(24)
        expires = now + int(self._lifetime.total_seconds())
        body = f"{_VERSION}.{sid}.{now}.{expires}"
        return f"{body}.{_b64(_mac(key, body))}", Session(sid, now, expires, _csrf(key, sid))

    def read(self, value: str | None) -> Session | None:
        """The session of a cookie value, or None (malformed, forged, expired, signed
        out, or made with a token no longer configured)."""
        if not value or len(value) > 256:
            return None
        parts = value.split(".")
        if len(parts) != 5 or parts[0] != _VERSION:
            return None
        _, sid, issued_text, expires_text, mac_text = parts
        if not (issued_text.isdigit() and expires_text.isdigit()):
            return None
        body = value.rpartition(".")[0]
        presented = mac_text.encode()
        found: bytes | None = None
        for key in self._keys():
            # Every key is tried whatever the others gave: no timing hint of which matched.
            if hmac.compare_digest(_b64(_mac(key, body)).encode(), presented):
                found = key
        if found is None:
            return None
        now = int(self._clock.now().timestamp())
        issued, expires = int(issued_text), int(expires_text)
        if not issued <= now < expires or sid in self._revoked:
            return None
        return Session(sid, issued, expires, _csrf(found, sid))

    def revoke(self, session: Session) -> None:
        now = int(self._clock.now().timestamp())
        for sid in [s for s, until in self._revoked.items() if until <= now]:
            del self._revoked[sid]
        self._revoked[session.id] = session.expires


def _csrf(key: bytes, sid: str) -> str:
    return _b64(hmac.new(key, _CSRF + sid.encode(), hashlib.sha256).digest())
