"""The published OpenAPI documents say what the models say: bodies, parameters and answers of
both APIs are the pydantic models' own JSON Schemas, not restatements of them."""

from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from orders_api.app import create_app as create_api
from orders_contract.models import (
    Envelope,
    ErrorEnvelope,
    HistoryEntry,
    ListEnvelope,
    Order,
    OrderBatch,
    OrderCreate,
    PageQuery,
)
from orders_query.app import create_app as create_query


def _inline(schema: Any, definitions: dict[str, Any]) -> Any:
    """`schema` with every `$ref` replaced by what it names; titles and null defaults dropped
    (FastAPI leaves those out of the answers it documents)."""
    if isinstance(schema, list):
        return [_inline(item, definitions) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        return _inline(definitions[schema["$ref"].rsplit("/", 1)[-1]], definitions)
    return {
        key: _inline(value, definitions)
        for key, value in schema.items()
        if key not in ("title", "$defs") and not (key == "default" and value is None)
    }


def _model(model: type[BaseModel], mode: str) -> Any:
    schema = model.model_json_schema(mode=mode)  # type: ignore[arg-type]
    return _inline(schema, schema.get("$defs", {}))


def _published(app: FastAPI) -> tuple[dict[str, Any], dict[str, Any]]:
    document = app.openapi()
    return document["paths"], document["components"]["schemas"]


@pytest.mark.parametrize(("path", "model"), [("/api/orders", OrderCreate), ("/api/orders/batch", OrderBatch)])
def test_request_bodies_are_the_models(path: str, model: type[BaseModel]) -> None:
    paths, definitions = _published(create_api())
    body = paths[path]["post"]["requestBody"]
    assert body["required"] is True
    assert _inline(body["content"]["application/json"]["schema"], definitions) == _model(model, "validation")


@pytest.mark.parametrize(
    ("app", "path", "method", "status", "model"),
    [
        ("api", "/api/orders", "post", "202", Envelope[Order]),
        ("api", "/api/orders/batch", "post", "202", Envelope[list[Order]]),
        ("api", "/api/orders/{orderId}/cancel", "post", "200", Envelope[Order]),
        ("api", "/api/orders", "post", "400", ErrorEnvelope),
        ("query", "/api/orders", "get", "200", ListEnvelope[Order]),
        ("query", "/api/orders/{orderId}", "get", "200", Envelope[Order]),
        ("query", "/api/orders/{orderId}", "get", "404", ErrorEnvelope),
        ("query", "/api/orders/{orderId}/history", "get", "200", Envelope[list[HistoryEntry]]),
    ],
)
def test_answers_are_the_models(
    app: str, path: str, method: str, status: str, model: type[BaseModel]
) -> None:
    paths, definitions = _published(create_api() if app == "api" else create_query())
    schema = paths[path][method]["responses"][status]["content"]["application/json"]["schema"]
    assert _inline(schema, definitions) == _model(model, "serialization")


@pytest.mark.parametrize("path", ["/api/orders", "/api/orders/user/{userId}", "/api/orders/status/{status}"])
def test_every_list_takes_the_page_model(path: str) -> None:
    paths, definitions = _published(create_query())
    parameters = {p["name"]: p for p in paths[path]["get"]["parameters"] if p["in"] == "query"}
    expected = _model(PageQuery, "validation")["properties"]
    assert set(parameters) == set(expected)
    for name, parameter in parameters.items():
        assert _inline(parameter["schema"], definitions) == expected[name]


def test_path_and_header_parameters_are_documented() -> None:
    api_paths, _ = _published(create_api())
    query_paths, _ = _published(create_query())
    (key,) = api_paths["/api/orders"]["post"]["parameters"]
    assert (key["name"], key["in"], key["required"]) == ("Idempotency-Key", "header", False)
    (order_id,) = query_paths["/api/orders/{orderId}"]["get"]["parameters"]
    assert (order_id["name"], order_id["in"], order_id["required"]) == ("orderId", "path", True)
    assert order_id["schema"]["maxLength"] == 64
