"""The OpenAPI document is generated from the routes, lists every one of them, and every
answer a route gives (success and refusal) has the shape the document says."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from fastapi.routing import APIRoute

from .conftest import Admin, auth
from .samples import samples
from .test_errors import CASES, JSON


def _operation(doc: dict[str, Any], template: str, method: str) -> dict[str, Any]:
    op = doc["paths"].get(template, {}).get(method.lower())
    assert op is not None, f"{method} {template} is not in the document"
    return op  # type: ignore[no-any-return]


def _check(doc: dict[str, Any], template: str, method: str, status: int, body: Any) -> None:
    op = _operation(doc, template, method)
    documented = op["responses"].get(str(status))
    assert documented is not None, f"{method} {template} answers {status}, undocumented"
    schema = documented["content"]["application/json"]["schema"]
    # The document's own components resolve the $refs.
    jsonschema.Draft202012Validator({**schema, "components": doc["components"]}).validate(body)


async def test_every_route_is_in_the_document_and_nothing_else(admin: Admin) -> None:
    r = await admin.client.get("/openapi.json", headers=auth())
    assert r.status_code == 200
    doc = r.json()
    app = admin.client._transport.app  # type: ignore[attr-defined]
    in_app = {
        (m.lower(), route.path)
        for route in app.routes
        if isinstance(route, APIRoute) and route.include_in_schema
        for m in route.methods
    }
    in_doc = {(m, p) for p, item in doc["paths"].items() for m in item}
    assert in_app == in_doc
    assert len(in_doc) == len(samples(admin)) - 1  # all but the document itself
    for path, item in doc["paths"].items():
        for method, op in item.items():
            # The guard is declared on every operation, and no FastAPI 422 is promised.
            assert op["security"] == [{"bearer": []}], (method, path)
            assert "422" not in op["responses"], (method, path)
            assert "401" in op["responses"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


async def test_every_answer_matches_the_document(admin: Admin) -> None:
    doc = (await admin.client.get("/openapi.json", headers=auth())).json()
    checked = 0
    for s in samples(admin):
        if s.template == "/openapi.json":
            continue
        r = await admin.client.request(s.method, s.path, json=s.json, headers=auth())
        assert r.status_code == s.status, (s.path, r.text)
        _check(doc, s.template, s.method, r.status_code, r.json())
        # The same route without a token: the documented 401.
        r = await admin.client.request(s.method, s.path, json=s.json)
        _check(doc, s.template, s.method, r.status_code, r.json())
        checked += 2
    assert checked == 2 * (len(samples(admin)) - 1)
    # The check can fail: a wrong shape (an amount as a number, a missing field) is caught.
    wrong = {"items": [{"account": "a", "state": "enabled", "keys": "1", "enabled_keys": 1}]}
    with pytest.raises(jsonschema.ValidationError):
        _check(doc, "/accounts", "GET", 200, {**wrong, "next_cursor": None})
    with pytest.raises(jsonschema.ValidationError):
        _check(doc, "/accounts", "GET", 200, {"items": []})
    balance = {"account": "a", "balance": 1.5, "standing": "good"}
    balance |= {"overdue_since": None, "monthly_cap": None, "low_balance": None}
    with pytest.raises(jsonschema.ValidationError):
        _check(doc, "/accounts/{account}/balance", "GET", 200, balance)


async def test_every_refusal_matches_the_document(admin: Admin) -> None:
    doc = (await admin.client.get("/openapi.json", headers=auth())).json()
    app = admin.client._transport.app  # type: ignore[attr-defined]
    for _name, method, path, kwargs, status, _code, _part in CASES:
        r = await admin.client.request(method, path, headers={**auth(), **JSON}, **kwargs)
        assert r.status_code == status
        template = _template(app, method, path.split("?")[0])
        if template is None:  # unknown route or method: no operation to hold it to
            assert r.json()["Code"] in ("NotFound", "MethodNotAllowed")
            continue
        _check(doc, template, method, r.status_code, r.json())


def _template(app: Any, method: str, path: str) -> str | None:
    from starlette.routing import Match

    scope = {"type": "http", "method": method, "path": path.replace("%0A", "\n")}
    for route in app.routes:
        if isinstance(route, APIRoute):
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route.path
    return None


async def test_the_replayed_idempotent_top_up_matches_its_documented_200(admin: Admin) -> None:
    doc = (await admin.client.get("/openapi.json", headers=auth())).json()
    body = {"amount": "3.00", "idempotency_key": "again"}
    for status in (201, 200):
        r = await admin.client.post("/accounts/alice/topups", json=body, headers=auth())
        assert r.status_code == status
        _check(doc, "/accounts/{account}/topups", "POST", status, r.json())
