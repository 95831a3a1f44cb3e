"""One real request per route of the admin API, with the status it answers on the seed.

Tests run them all (auth, the OpenAPI check); ``test_every_route_has_a_sample`` fails
when a route is added without one, so no route escapes those tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .conftest import Admin


@dataclass(frozen=True)
class Sample:
    method: str
    template: str  # the route's path as FastAPI declares it
    path: str
    status: int
    json: Any = None


def samples(a: Admin) -> list[Sample]:
    """In an order that works on one seeded ledger (mutations last where they matter)."""
    rows = [
        ("GET", "/accounts", "/accounts", 200, None),
        ("GET", "/accounts/{account}", "/accounts/alice", 200, None),
        ("POST", "/accounts/{account}/keys", "/accounts/carol/keys", 201, None),
        ("GET", "/accounts/{account}/keys", "/accounts/alice/keys", 200, None),
        ("GET", "/keys/{access_key_id}", f"/keys/{a.alice_key}", 200, None),
        ("POST", "/keys/{access_key_id}/disable", f"/keys/{a.bob_key}/disable", 200, None),
        ("POST", "/keys/{access_key_id}/enable", f"/keys/{a.bob_key}/enable", 200, None),
        ("GET", "/accounts/{account}/balance", "/accounts/alice/balance", 200, None),
        (
            "POST",
            "/accounts/{account}/topups",
            "/accounts/alice/topups",
            201,
            {"amount": "10.00", "idempotency_key": "sample-topup"},
        ),
        (
            "POST",
            "/accounts/{account}/corrections",
            "/accounts/alice/corrections",
            201,
            {"amount": "-1.5", "reason": "sample"},
        ),
        ("GET", "/accounts/{account}/entries", "/accounts/alice/entries", 200, None),
        (
            "PUT",
            "/accounts/{account}/monthly-cap",
            "/accounts/alice/monthly-cap",
            200,
            {"amount": "500.00"},
        ),
        (
            "PUT",
            "/accounts/{account}/low-balance",
            "/accounts/alice/low-balance",
            200,
            {"amount": "20.00"},
        ),
        ("POST", "/accounts/{account}/suspend", "/accounts/bob/suspend", 200, {"reason": "audit"}),
        ("POST", "/accounts/{account}/restore", "/accounts/bob/restore", 200, None),
        ("GET", "/plans", "/plans", 200, None),
        ("GET", "/plans/{plan_id}", f"/plans/{a.plan_id}", 200, None),
        (
            "POST",
            "/accounts/{account}/plans",
            "/accounts/alice/plans",
            201,
            {"kind": "general", "points": "5000", "price": "60.00"},
        ),
        ("POST", "/plans/{plan_id}/renew", f"/plans/{a.plan_id}/renew", 201, {}),
        ("GET", "/plans/{plan_id}/refund", f"/plans/{a.qps_id}/refund", 200, None),
        ("POST", "/plans/{plan_id}/refund", f"/plans/{a.qps_id}/refund", 200, None),
        ("GET", "/notices", "/notices", 200, None),
        ("GET", "/accounts/{account}/bills/{month}", "/accounts/alice/bills/2026-03", 200, None),
        ("GET", "/accounts/{account}/usage", "/accounts/alice/usage", 200, None),
        ("GET", "/accounts/{account}/overview", "/accounts/alice/overview", 200, None),
        ("GET", "/accounts/{account}/plans", "/accounts/alice/plans", 200, None),
        (
            "GET",
            "/accounts/{account}/deductions/{month}",
            "/accounts/alice/deductions/2026-03",
            200,
            None,
        ),
        ("GET", "/accounts/{account}/preview", "/accounts/alice/preview", 200, None),
        ("GET", "/openapi.json", "/openapi.json", 200, None),
    ]
    return [Sample(*row) for row in rows]
