"""OpenTelemetry, when the application uses it: attributes on the server span, a commit span.

The meter never imports OpenTelemetry itself. An application that configured a
tracer provider has imported ``opentelemetry.trace`` already, so :func:`active`
looks in ``sys.modules``: absent (not installed, or installed and unused), the
meter traces nothing and costs nothing (one ``None`` test per call). Present
with a configured provider (not the API's default proxy), each call sets its
``metering.*`` attributes on the current span (the HTTP server span of the
framework's or the ASGI instrumentation's middleware outside the meter), and in
strict mode the wait for the ledger commit is a child span, ``metering.ledger.commit``.

Decided when the runtime starts (``MeteringRuntime.start``): configure the
tracer provider before the server's lifespan starts, as OpenTelemetry's own
instrumentations expect. docs/tracing.md has the attributes and the limits.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # for the type checker only: never imported at run time from here
    from opentelemetry.trace import Span, Tracer

__all__ = [
    "ACCESS_KEY_ID",
    "ACCOUNT",
    "ACTION",
    "CATEGORY",
    "COMMIT_SPAN",
    "OUTCOME",
    "REASON",
    "RECORD_ID",
    "Tracing",
    "active",
]

# Attribute names in the semantic conventions' style (lower-case dotted namespaces,
# snake_case leaves, no name that is also a namespace), under the meter's own prefix.
ACCOUNT: Final = "metering.account.id"
ACCESS_KEY_ID: Final = "metering.access_key.id"
CATEGORY: Final = "metering.api.category"
ACTION: Final = "metering.api.action"
#: ``charged``, ``free`` or ``refused``.
OUTCOME: Final = "metering.outcome"
#: Why: the refusal's reason, the free call's code, a chargeable error's code ("" for a 200).
REASON: Final = "metering.reason"
#: The ledger id of the call's record: charged calls only (free and refused ones have none).
RECORD_ID: Final = "metering.record.id"
#: The strict-mode wait for the record's commit, a child of the current span.
COMMIT_SPAN: Final = "metering.ledger.commit"

_TRACER_NAME: Final = "metering_middleware"


class Tracing:
    """What the meter needs of OpenTelemetry, bound once at start."""

    __slots__ = ("_current", "_tracer")

    def __init__(self, current_span: Any, tracer: Tracer) -> None:
        self._current = current_span
        self._tracer = tracer

    def annotate(
        self,
        account: str,
        access_key_id: str,
        category: str,
        action: str,
        outcome: str,
        reason: str,
        record_id: str | None,
    ) -> None:
        """The call's attributes on the current span, if one is recording."""
        span: Span = self._current()
        if not span.is_recording():
            return
        attributes = {OUTCOME: outcome, REASON: reason}
        # Attributes cannot be null: what the meter did not learn (a refusal before the
        # caller was known) is left out rather than written empty.
        if account:
            attributes[ACCOUNT] = account
        if access_key_id:
            attributes[ACCESS_KEY_ID] = access_key_id[:128]  # the caller's own text: bounded
        if category:
            attributes[CATEGORY] = category
        if action:
            attributes[ACTION] = action
        if record_id:
            attributes[RECORD_ID] = record_id
        span.set_attributes(attributes)

    async def commit_wait(self, future: Any, record_id: str) -> None:
        """Await ``future`` (the record's commit) inside a ``metering.ledger.commit`` span."""
        with self._tracer.start_as_current_span(COMMIT_SPAN, attributes={RECORD_ID: record_id}):
            await future


def active() -> Tracing | None:
    """A :class:`Tracing` when the application configured a tracer provider, else None."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None  # nobody imported it, so nobody configured it: never imported here
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None  # the API's defaults: no SDK behind them, spans would be no-ops
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("metering_middleware")
    except PackageNotFoundError:  # run from a source tree without an install
        ours = None
    return Tracing(trace.get_current_span, provider.get_tracer(_TRACER_NAME, ours))
