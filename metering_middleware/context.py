"""What the meter tells the wrapped app about the call it admitted.

The middleware puts one ``MeteredCall`` into ``scope["state"]["metering"]``
(``request.state.metering`` in Starlette and FastAPI) before the wrapped app
runs. A proxy that rewrites the call (the example gateway's re-signer) builds
what it forwards from these verified values, never from its own second reading
of the request, so the upstream runs exactly what the ledger bills; a proxy
that finds no ``MeteredCall`` in its scope was mounted without the meter and
must not forward anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from starlette.types import Scope

__all__ = ["STATE_KEY", "MeteredCall", "metered_call"]

#: The key under ``scope["state"]``.
STATE_KEY = "metering"


@dataclass(frozen=True, slots=True)
class MeteredCall:
    """The caller and the API the meter identified, verified and admitted."""

    account: str
    access_key_id: str
    category: str
    action: str
    version: str
    #: The ledger id this call's record gets if it is chargeable.
    record_id: str
    style: Literal["v1", "v3"]
    #: V1: the signed query and form parameters in arrival order (``Signature``
    #: included); V3: the signed query parameters.
    params: tuple[tuple[str, str], ...]
    #: Admitted as an internal hop (the trusted-hop proof), not by a signature.
    trusted_hop: bool = False
    #: The query's parameters as the meter read them, in arrival order.
    query: tuple[tuple[str, str], ...] = ()
    #: V1: the form body's parameters as the meter read them (a body the meter
    #: does not read as a form has none); ``params`` is ``query + form``. V3:
    #: none (the body, covered by the signature's hash, is forwarded as it is).
    form: tuple[tuple[str, str], ...] = ()


def metered_call(scope: Scope) -> MeteredCall | None:
    """The ``MeteredCall`` of a scope the meter passed on, or ``None``."""
    state = scope.get("state")
    call = state.get(STATE_KEY) if isinstance(state, dict) else None
    return call if isinstance(call, MeteredCall) else None
