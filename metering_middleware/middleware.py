"""``MeteringMiddleware``: the order of the steps a metered call takes.

identify -> authenticate -> forward to the wrapped app -> observe the answer
-> classify -> record. Pure ASGI: the response is never buffered; a 200 body
streams through untouched, a non-200 body is forwarded as it comes while a
bounded copy is kept to read its error code.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Mapping
from itertools import chain
from types import TracebackType
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import logs
from .clock import Clock, utc_from_timestamp
from .config import MeteringConfig
from .context import STATE_KEY, MeteredCall
from .durable_nonces import DurableNonceLimiter
from .errors import (
    ACCOUNT_DISABLED,
    BODY_TOO_LARGE,
    HEADERS_TOO_LARGE,
    INVALID_ACCESS_KEY_ID,
    SERVICE_UNAVAILABLE,
    ApiError,
    error_body,
)
from .identity import CallIdentity, wants_xml
from .ledger import CallRecord, Outcome, new_record_id
from .limiter import (
    DeferredNonceStore,
    MemoryLimiter,
    NonceClaim,
    rate_limit_headers,
    refusal,
    upstream_budget_kind,
)
from .outcome import ErrorBodyTee, ErrorBodyUnreadable, read_error_code, sniff_request_id
from .runtime import MeteringRuntime
from .signing import extract_nonce
from .spend_guard import Reservation

__all__ = ["MeteringMiddleware"]

log = logging.getLogger("metering_middleware")

#: The free reason of an error body a parser failed on (a bug, not garbage).
PARSE_ERROR = "parse_error"

#: How much of a 200 body is looked at for its RequestId when no header names it.
_SNIFF_LIMIT = 1024
#: RFC 6455 close code 1008: "a message that violates its policy".
_WS_POLICY_VIOLATION = 1008
#: A module constant: ``Outcome.CHARGED`` is a class attribute of an Enum, whose lookup
#: goes through the enum's metaclass (~0.1 µs, more than the rest of the guard's step).
_CHARGED = Outcome.CHARGED
#: An outcome's text by a dict lookup: ``.value`` on an Enum member is a Python property.
_TEXT = {o: o.value for o in Outcome}


async def _unavailable(scope: Scope, send: Send, message: str) -> None:
    """A 503 ``ServiceUnavailable`` before anything about the call is known."""
    xml = wants_xml(scope.get("query_string", b""), scope.get("headers", ()))
    request_id = new_record_id()
    body, content_type = error_body(SERVICE_UNAVAILABLE.code, message, request_id, xml=xml)
    logs.refused(
        account="",
        access_key_id="",
        category="",
        action="",
        status=SERVICE_UNAVAILABLE.status,
        code=SERVICE_UNAVAILABLE.code,
        reason="stopped",
        request_id=request_id,
    )
    await send(
        {
            "type": "http.response.start",
            "status": SERVICE_UNAVAILABLE.status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                (b"x-acs-request-id", request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


class MeteringMiddleware:
    """Meters every VIAPI call that passes through ``app``.

    Give it a ``runtime`` (shared, pre-built parts) or a ``config``; keyword
    settings build a ``MeteringConfig``. ``fast_path=False`` decides every call step by
    step (the same rules; for tests comparing both). The ledger writer starts with the ASGI
    lifespan (or on first use, or through ``async with middleware``) and is
    flushed on shutdown.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        runtime: MeteringRuntime | None = None,
        config: MeteringConfig | None = None,
        clock: Clock | None = None,
        fast_path: bool = True,
        **settings: Any,
    ) -> None:
        if runtime is None:
            if config is None:
                config = MeteringConfig.from_arguments(settings)
            elif settings:
                raise TypeError("pass either config or keyword settings, not both")
            runtime = MeteringRuntime(config, clock=clock)
        elif config is not None or settings:
            raise TypeError("a runtime carries its own config")
        self.app = app
        self.runtime = runtime
        cfg = runtime.config
        self._strict = cfg.mode == "strict"
        self._trusted_key = cfg.trusted_hop_header.lower()
        self._trusted_header = self._trusted_key.encode("latin-1")
        self._trusted_secret = (
            cfg.trusted_hop_secret.encode() if cfg.trusted_hop_secret is not None else None
        )
        self._window = cfg.signature_window
        self._throttle_status = cfg.throttle_status
        self._over_budget = upstream_budget_kind(
            cfg.upstream_throttle_code, cfg.upstream_throttle_status
        )
        self._max_head = cfg.max_header_bytes
        self._max_headers = cfg.max_header_count
        #: The limiter when it decides in this process without suspending and claims the
        #: nonces (``memory://``): the fast path's condition. Else every call is layered.
        limiter = runtime.limiter
        self._limiter_now: DurableNonceLimiter | None = (
            limiter
            if fast_path
            and limiter is not None
            and type(limiter.inner) is MemoryLimiter  # exactly: a subclass may override admit
            and isinstance(runtime.verifier.nonces, DeferredNonceStore)
            else None
        )
        #: Calls admitted by the fast path (tests; the rest were decided step by step).
        self.fast_admitted = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Everything that enters is metered: a gateway's own routes (health,
        # metrics, admin) live beside the metered app, never behind a skip list
        # in here, so nothing that skips the meter can reach the wrapped proxy.
        kind = scope["type"]
        if kind == "http":
            runtime = self.runtime
            if not runtime.started:
                if runtime.stopped:
                    # Shut down for good (lifespan ended): the ledger takes nothing more.
                    await _unavailable(scope, send, "The metering gateway is shutting down.")
                    return
                await runtime.start()  # first call before any lifespan: start on use
            await _MeteredCall(self, scope, receive, send).run()
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        elif kind == "websocket":
            # No VIAPI call is a websocket, and a passed-on one would reach the
            # upstream unmetered: refused before the handshake is accepted.
            await send({"type": "websocket.close", "code": _WS_POLICY_VIOLATION})
        else:
            raise RuntimeError(f"MeteringMiddleware does not handle {kind!r} scopes")

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> MeteringMiddleware:
        await self.runtime.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.runtime.stop()

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        app_took_startup = False

        async def receive_wrapper() -> Message:
            nonlocal app_took_startup
            message = await receive()
            if message["type"] == "lifespan.startup":
                app_took_startup = True
                # Start before the app so it never serves a call the ledger cannot take.
                await self.runtime.start()
            return message

        async def send_wrapper(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.runtime.stop()  # flush the ledger before the server exits
            await send(message)

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except Exception:
            if app_took_startup:
                raise
            # The wrapped app does not speak lifespan: speak it for the meter alone.
            await self.runtime.serve_lifespan(receive, send)


#: V1 signatures cover the query and the form alone; of the headers an upstream
#: could read as the call, these are dropped from a V1 call (or set by the meter).
_V1_UNSIGNED_HEADERS = frozenset((b"authorization", b"content-type"))
_FORM_TYPE = b"application/x-www-form-urlencoded"


def _v1_headers(
    headers: list[tuple[bytes, bytes]], identity: CallIdentity
) -> list[tuple[bytes, bytes]]:
    """A V1 call's headers as forwarded: nothing its signature leaves open names a call.

    ``x-acs-action``/``x-acs-version`` (which the SDKs send beside the signed
    ``Action``) and every other ``x-acs-*`` header, ``Authorization`` (a V3
    reading) and the client's ``Content-Type`` are dropped; the action, version
    and, for a form the meter read, the form's media type are set from what was
    verified. (Names are lower-case in ASGI.)
    """
    kept = [
        (k, v) for k, v in headers if not k.startswith(b"x-acs-") and k not in _V1_UNSIGNED_HEADERS
    ]
    kept.append((b"x-acs-action", identity.action.encode()))
    kept.append((b"x-acs-version", identity.version.encode()))
    if identity.form:
        kept.append((b"content-type", _FORM_TYPE))
    return kept


class _BodyReplay:
    """Hands the already-read request body to the wrapped app, then the real stream."""

    __slots__ = ("_body", "_receive")

    def __init__(self, body: bytes | None, receive: Receive) -> None:
        self._body = body
        self._receive = receive

    async def __call__(self) -> Message:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        return await self._receive()  # http.disconnect, when it comes


class _MeteredCall:
    """The state of one call; made per request, never shared."""

    __slots__ = (
        "arrival",
        "body",
        "complete",
        "content_length",
        "content_type",
        "credential_account",
        "done",
        "encoding",
        "extra_headers",
        "future",
        "held_start",
        "identity",
        "latency_ms",
        "meter",
        "receive",
        "received",
        "record_id",
        "request_id",
        "reservation",
        "rt",
        "scope",
        "send",
        "sniff",
        "started_at",
        "status",
        "submitted",
        "tee",
    )

    def __init__(self, meter: MeteringMiddleware, scope: Scope, receive: Receive, send: Send):
        self.meter = meter
        self.rt = meter.runtime
        self.scope = scope
        self.receive = receive
        self.send = send
        self.status: int | None = None
        self.identity: CallIdentity | None = None
        self.credential_account = ""
        self.future: Any = None
        self.submitted = False
        self.done = False
        self.complete = False
        self.received = 0
        self.content_length: int | None = None
        self.encoding: str | None = None
        self.content_type: str | None = None
        self.request_id: str | None = None
        self.sniff = b""
        self.tee: ErrorBodyTee | None = None
        self.latency_ms = 0.0
        self.body: bytes | None = None
        #: Strict mode, an answer with no body: its start, held until the commit.
        self.held_start: Message | None = None
        #: RateLimit headers added to the answer (refusal or metered response).
        self.extra_headers: list[tuple[bytes, bytes]] = []
        #: This call's share of its account's spend estimate (enforce_balance).
        self.reservation: Reservation | None = None

    # -- admission -----------------------------------------------------------------

    async def run(self) -> None:
        rt = self.rt
        # Epoch seconds to the microsecond (what the record's datetime holds), so the
        # counter's minute and the record's instant never disagree at a minute's edge.
        self.arrival = round(rt.clock.time(), 6)
        self.started_at = time.perf_counter()
        scope = self.scope
        try:
            if not rt.writer.accepting:
                raise ApiError(SERVICE_UNAVAILABLE, "The metering ledger cannot take records.")
            self._check_head()
            self.body = body = await self._read_body()
            if body is None:
                return  # the client left before sending its request: nothing happened
            identity = rt.resolver.resolve(
                scope["method"], scope["path"], scope["query_string"], scope["headers"], body
            )
            self.identity = identity
            # -- the caller and its API are known from here on.
            if not self._admit_now(identity):
                trusted, scope = await self._admit(identity)
            else:
                trusted = False
        except ApiError as exc:
            # -- every refusal, from either path, is answered here.
            await self._refuse(exc)
            return
        except BaseException:
            # Anything else (a limiter that raised, a cancelled call) after admission:
            # the reservation must not outlive the call, or it would hold the estimate.
            reservation, self.reservation = self.reservation, None
            if reservation is not None and rt.guard is not None:
                rt.guard.release(reservation, self.arrival)
            raise
        await self._forward(scope, body, trusted)
        # -- the response is done here (sent, or the app raised out of ``_forward``).

    def _admit_now(self, identity: CallIdentity) -> bool:
        """The common call's admission, at once: a known, enabled key from the loaded
        snapshots, a signature, the limiter in this process (``memory://``, which claims
        the nonce). Returns False, having done nothing, for any other call: ``_admit``
        decides it. The rules are the layered path's own (the same functions, in the
        same order), so both give every call the same answer; only the awaits are gone.
        """
        meter = self.meter
        limiter = meter._limiter_now
        if limiter is None or meter._trusted_key in identity.signed.headers:
            return False
        rt = self.rt
        credential = rt.credentials.cached(identity.access_key_id)
        if credential is None or not credential.enabled:
            return False
        account = credential.account
        limit = rt.entitlements.qps_now(account, identity.category, identity.action)
        if limit is None:
            return False
        self.credential_account = account
        signed = identity.signed
        signed_at = rt.verifier.check(signed, credential.secret)
        guard = rt.guard
        if guard is not None:
            self.reservation = guard.admit(account, identity.item, self.arrival)
        claim = NonceClaim(signed.access_key_id, extract_nonce(signed), signed_at + meter._window)
        decision = limiter.admit_now(account, identity.category, identity.action, limit, claim)
        self.extra_headers = rate_limit_headers(decision)
        refused = refusal(
            decision, throttle_status=meter._throttle_status, upstream_budget=meter._over_budget
        )
        if refused is not None:
            raise refused
        meter.fast_admitted += 1
        return True

    async def _admit(self, identity: CallIdentity) -> tuple[bool, Scope]:
        """Every other call's admission, step by step (a key to look up or refuse, a
        trusted hop, a shared limiter): returns whether the call is a trusted hop and
        the scope to forward, or raises the refusal."""
        rt = self.rt
        credential = await rt.credentials.lookup(identity.access_key_id)
        if credential is None:
            raise ApiError(
                INVALID_ACCESS_KEY_ID,
                f"Specified access key is not found: {identity.access_key_id}",
            )
        self.credential_account = credential.account
        if not credential.enabled:
            raise ApiError(ACCOUNT_DISABLED, "Specified access key is disabled.")
        trusted, forwarded_scope = self._trusted_hop(self.scope, identity.signed.headers)
        if not trusted:
            await rt.verifier.verify(identity.signed, credential.secret)
        guard = rt.guard
        if guard is not None:
            # Standing, spend guard and cap, before anything is spent on the call
            # (a QPS token, the upstream): refusals are free and never forwarded.
            self.reservation = guard.admit(credential.account, identity.item, self.arrival)
        limiter = rt.limiter
        if limiter is not None:
            account = credential.account
            limit = await rt.entitlements.qps(account, identity.category, identity.action)
            claim = None if trusted else NonceClaim.of(identity.signed, self.meter._window)
            decision = await limiter.admit(
                account, identity.category, identity.action, limit, nonce=claim
            )
            self.extra_headers = rate_limit_headers(decision)
            meter = self.meter
            refused = refusal(
                decision,
                throttle_status=meter._throttle_status,
                upstream_budget=meter._over_budget,
            )
            if refused is not None:
                raise refused
        return trusted, forwarded_scope

    def _check_head(self) -> None:
        """Refuse an oversized head before anything decodes, caches or forwards it."""
        scope = self.scope
        headers = scope["headers"]
        meter = self.meter
        if len(headers) > meter._max_headers:
            raise ApiError(
                HEADERS_TOO_LARGE, f"The request has more than {meter._max_headers} headers."
            )
        # One join in C rather than two len() per header in Python.
        size = (
            len(scope["query_string"])
            + len(scope.get("raw_path") or b"")
            + len(b"".join(chain.from_iterable(headers)))
        )
        if size > meter._max_head:
            raise ApiError(
                HEADERS_TOO_LARGE,
                f"The request line and headers are larger than {meter._max_head} bytes.",
            )

    async def _read_body(self) -> bytes | None:
        limit = self.rt.config.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise ApiError(
                        BODY_TOO_LARGE, f"The request body is larger than {limit} bytes."
                    )
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _trusted_hop(self, scope: Scope, decoded: Mapping[str, str]) -> tuple[bool, Scope]:
        """Whether an internal hop proved itself; the proof never reaches the upstream."""
        # ``decoded`` (identity's) holds every header under its lower-cased name, so
        # a miss there rules the raw header out without walking the list: the usual
        # call, from a client, carries none.
        if self.meter._trusted_key not in decoded:
            return False, scope
        name = self.meter._trusted_header
        headers = scope["headers"]
        if not any(k == name for k, _ in headers):
            return False, scope
        secret = self.meter._trusted_secret
        proof = next(v for k, v in headers if k == name)
        trusted = secret is not None and hmac.compare_digest(proof, secret)
        stripped = dict(scope)
        stripped["headers"] = [(k, v) for k, v in headers if k != name]
        return trusted, stripped

    async def _refuse(self, exc: ApiError) -> None:
        identity = self.identity
        category = identity.category if identity else ""
        action = identity.action if identity else ""
        self._count(Outcome.REFUSED, exc.reason)
        xml = (
            identity.wants_xml
            if identity
            else wants_xml(self.scope["query_string"], self.scope["headers"], self.body or b"")
        )
        request_id = new_record_id()
        body, content_type = error_body(exc.code, exc.message, request_id, xml=xml)
        logs.refused(
            account=self.credential_account,
            access_key_id=identity.access_key_id if identity else "",
            category=category,
            action=action,
            status=exc.status,
            code=exc.code,
            reason=exc.reason,
            request_id=request_id,
        )
        await self.send(
            {
                "type": "http.response.start",
                "status": exc.status,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-acs-request-id", request_id.encode()),
                    *self.extra_headers,
                ],
            }
        )
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    # -- forwarding and observing --------------------------------------------------

    async def _forward(self, scope: Scope, body: bytes, trusted: bool) -> None:
        identity = self.identity
        assert identity is not None
        # Made at admission, so ids sort by arrival and a retry of this record is idempotent.
        self.record_id = new_record_id()
        # The wrapped app learns what was verified (and builds on it, never on a
        # reading of its own). A copy: the server's state dict may be shared.
        state = scope.get("state")
        state = dict(state) if state else {}
        state[STATE_KEY] = MeteredCall(
            self.credential_account,
            identity.access_key_id,
            identity.category,
            identity.action,
            identity.version,
            self.record_id,
            identity.style,
            identity.signed.params,
            trusted,
            identity.query,
            identity.form,
        )
        scope = {**scope, "state": state}
        if identity.style == "v1":
            scope["headers"] = _v1_headers(scope["headers"], identity)
        if identity.item.free:
            try:
                await self.meter.app(scope, _BodyReplay(body, self.receive), self.send)
            finally:
                self._count(Outcome.FREE, "free_action")
            return
        try:
            await self.meter.app(scope, _BodyReplay(body, self.receive), self._observe)
        except BaseException:
            if self.status is None:
                self._count(Outcome.FREE, "app_error")  # no answer: nothing to charge
            else:
                self._settle_unfinished()
            raise
        if self.status is None:
            self._count(Outcome.FREE, "no_response")
            return
        self._settle_unfinished()
        if self.held_start is not None:
            # The app ended without a body message: the head alone is the answer.
            await self._release_start()
            await self.send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _observe(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            if self.done:
                await self.send(message)
                return
            await self._body(message)
        elif kind == "http.response.start":
            self._start(message)
            if self.extra_headers:
                message = {**message, "headers": [*message.get("headers", ()), *self.extra_headers]}
            if self.meter._strict and self.status == 200 and self._bodyless():
                # The client is complete once this head arrives: in strict mode it
                # waits for the record's commit like a last byte would.
                self.held_start = message
                return
            await self.send(message)
        else:
            await self.send(message)

    def _start(self, message: Message) -> None:
        self.status = status = message["status"]
        self.latency_ms = (time.perf_counter() - self.started_at) * 1000.0
        for name, value in message.get("headers", ()):
            if name == b"content-length":
                try:
                    self.content_length = int(value)
                except ValueError:
                    self.content_length = None
            elif name == b"x-acs-request-id":
                self.request_id = value.decode("latin-1")
            elif name == b"content-encoding":
                self.encoding = value.decode("latin-1")
            elif name == b"content-type":
                self.content_type = value.decode("latin-1")
        if status == 200:
            # The upstream answered 200: charged from here on, whatever happens next.
            if self.request_id is not None:
                self._submit(None)
        else:
            self.tee = ErrorBodyTee(self.rt.config.error_body_limit)

    def _bodyless(self) -> bool:
        """Whether the client holds the whole answer once the head arrives."""
        return self.content_length == 0 or self.scope["method"] == "HEAD"

    async def _release_start(self) -> None:
        start, self.held_start = self.held_start, None
        assert start is not None
        if self.future is not None:
            tracing = self.rt.tracing
            if tracing is None:
                await self.future
            else:
                await tracing.commit_wait(self.future, self.record_id)
        await self.send(start)

    async def _body(self, message: Message) -> None:
        chunk: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        self.received += len(chunk)
        completing = not more or (
            self.content_length is not None and self.received >= self.content_length
        )
        if self.status == 200:
            if not self.submitted:
                self._sniff(chunk, completing)
        else:
            assert self.tee is not None
            self.tee.feed(chunk)
            if completing:
                self._classify_error()
        if not completing:
            if self.held_start is None:
                await self.send(message)
            # else HEAD: no body reaches the client, and nothing may precede the head.
            return
        self.done = True
        if self.held_start is not None:
            await self._release_start()
            await self.send(message)
            return
        future = self.future
        if future is None or not self.meter._strict:
            await self.send(message)
            return
        # Strict: the client must not hold a complete chargeable response before
        # its record is committed. A Content-Length client is complete on the last
        # byte, a chunked client on the final message.
        if more and chunk:
            # The length is complete but a final (empty) message still follows
            # (Starlette's streaming style): hold back only the last byte.
            if len(chunk) > 1:
                await self.send(
                    {"type": "http.response.body", "body": chunk[:-1], "more_body": True}
                )
            tracing = self.rt.tracing
            if tracing is None:
                await future
            else:
                await tracing.commit_wait(future, self.record_id)
            await self.send({"type": "http.response.body", "body": chunk[-1:], "more_body": True})
        else:
            # The final message: hold all of it and send it once after the commit
            # (one send, not two, for the usual single-message answer).
            tracing = self.rt.tracing
            if tracing is None:
                await future
            else:
                await tracing.commit_wait(future, self.record_id)
            await self.send(message)

    def _sniff(self, chunk: bytes, completing: bool) -> None:
        if len(self.sniff) < _SNIFF_LIMIT:
            self.sniff += chunk[: _SNIFF_LIMIT - len(self.sniff)]
            request_id = sniff_request_id(self.sniff, content_encoding=self.encoding)
            if request_id is not None:
                self._submit(request_id)
                return
        if completing or len(self.sniff) >= _SNIFF_LIMIT:
            self._submit(None)

    def _classify_error(self) -> None:
        tee = self.tee
        assert tee is not None and self.status is not None
        # An overflowed copy is still a prefix: the code comes early in both formats.
        try:
            code = read_error_code(
                tee.data, content_encoding=self.encoding, content_type=self.content_type
            )
        except ErrorBodyUnreadable as exc:
            # Free (the safe default), but never silently: counted and logged apart.
            identity = self.identity
            log.warning(
                "error body of a %s answer to %s.%s could not be parsed (%s): counted free "
                "as parse_error",
                self.status,
                identity.category if identity else "",
                identity.action if identity else "",
                exc,
            )
            self._count(Outcome.FREE, PARSE_ERROR)
            self.done = True
            return
        if code is not None and code in self.rt.config.chargeable_codes:
            if self.request_id is None:
                self.request_id = sniff_request_id(
                    tee.data[:_SNIFF_LIMIT], content_encoding=self.encoding
                )
            self._submit(self.request_id, code)
        else:
            self._count(Outcome.FREE, code if code is not None else "unreadable")
            self.done = True

    def _settle_unfinished(self) -> None:
        """The body broke off or the client left: the upstream's answer still decides."""
        if self.submitted or self.done:
            return
        if self.status == 200:
            sniffed = self.sniff and sniff_request_id(self.sniff, content_encoding=self.encoding)
            self._submit(sniffed or None)
        else:
            self._classify_error()

    def _submit(self, request_id: str | None, error_code: str | None = None) -> None:
        identity = self.identity
        assert identity is not None and self.status is not None
        self.submitted = True
        record = CallRecord(
            id=self.record_id,
            request_id=request_id or self.request_id,
            account=self.credential_account,
            access_key_id=identity.access_key_id,
            category=identity.category,
            action=identity.action,
            version=identity.version,
            item=identity.item.item,
            occurred_at=utc_from_timestamp(self.arrival),
            status=self.status,
            error_code=error_code,
            latency_ms=round(self.latency_ms, 3),
        )
        self.future = self.rt.writer.submit(record)
        self._count(Outcome.CHARGED, error_code or "")

    def _count(self, outcome: Outcome, reason: str) -> None:
        # Every call is counted exactly once, when its outcome is known: the moment its
        # reservation is kept (a record was written) or given back (free, refused).
        reservation = self.reservation
        if reservation is not None:
            self.reservation = None  # kept or given back once, whatever happens next
            if outcome is _CHARGED:
                # ``SpendGuard.recorded``, inline: a counter on the reservation (no call).
                reservation.recorded += 1
            else:
                guard = self.rt.guard
                assert guard is not None
                guard.release(reservation, self.arrival)
        identity = self.identity
        category = identity.category if identity else ""
        action = identity.action if identity else ""
        rt = self.rt
        rt.writer.count_at(self.credential_account, category, action, outcome, reason, self.arrival)
        rt.metrics.count(category or "unknown", action or "unknown", _TEXT[outcome], reason)
        tracing = rt.tracing
        if tracing is not None:  # OpenTelemetry configured (tracing.py): the server span
            tracing.annotate(
                self.credential_account,
                identity.access_key_id if identity else "",
                category,
                action,
                _TEXT[outcome],
                reason,
                self.record_id if outcome is _CHARGED else None,  # a record was written
            )
