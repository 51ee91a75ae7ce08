"""OpenAPI for generated clients: operation ids, tags, the version that follows the API, and
the front door's merged document (no servers: documents only)."""

import copy
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from orders_web.fastpath import direct, include
from orders_web.openapi import (
    TAGS,
    DocumentClash,
    api_version,
    merge_documents,
    openapi_tags,
    operation_id,
    operations,
    versioned_openapi,
    without_unsent_422,
)


class Thing(BaseModel):
    name: str


def _app(version: str = "1.0.0") -> FastAPI:
    app = FastAPI(
        title="t",
        version=version,
        generate_unique_id_function=operation_id,
        openapi_tags=openapi_tags("orders"),
    )
    versioned_openapi(app)
    router = APIRouter(tags=["orders"])

    @router.get("/things/{name}", response_model=Thing)
    async def get_thing(name: str) -> Thing:
        return Thing(name=name)

    @direct(router, "POST", "/things", response_model=Thing)
    async def place_thing(thing: Thing) -> Any:
        raise AssertionError("never served here")

    include(app, router)

    @app.get("/other")
    async def list_other_things_() -> list[Thing]:
        return []

    return app


def test_operation_ids_are_the_camel_case_function_names() -> None:
    document = _app().openapi()
    ids = {where: op["operationId"] for where, op in operations(document).items()}
    assert ids == {
        ("GET", "/things/{name}"): "getThing",
        ("POST", "/things"): "placeThing",  # a direct route, included flat
        ("GET", "/other"): "listOtherThings",
    }


def test_tags_carry_their_one_description() -> None:
    assert _app().openapi()["tags"] == [{"name": "orders", "description": TAGS["orders"]}]
    with pytest.raises(KeyError):
        openapi_tags("nothing")


def test_the_version_follows_paths_and_components_only() -> None:
    app = _app()
    document = app.openapi()
    base, digest = document["info"]["version"].split("+")
    assert base == "1.0.0"
    assert len(digest) == 8
    assert int(digest, 16) >= 0
    assert api_version(document) == document["info"]["version"]
    # info does not count; a changed description, path or schema does
    renamed = copy.deepcopy(document)
    renamed["info"]["title"] = "another"
    assert api_version(renamed) == api_version(document)
    described = copy.deepcopy(document)
    described["paths"]["/other"]["get"]["summary"] = "changed"
    assert api_version(described) != api_version(document)
    schema = copy.deepcopy(document)
    schema["components"]["schemas"]["Thing"]["properties"]["size"] = {"type": "integer"}
    assert api_version(schema) != api_version(document)
    assert api_version(document, "2.0.0") == f"2.0.0+{digest}"
    assert _app("3.1.0").openapi()["info"]["version"] == f"3.1.0+{digest}"


def _document(paths: dict[str, Any], schemas: dict[str, Any] | None = None, tags: Any = ()) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "x", "version": "0"},
        "paths": paths,
        "components": {"schemas": schemas or {}},
        "tags": list(tags),
    }


def _op(op_id: str, **extra: Any) -> dict[str, Any]:
    return {"operationId": op_id, "responses": {"200": {"description": "ok"}}, **extra}


def test_merge_holds_every_operation_of_both() -> None:
    api = _document(
        {"/orders": {"post": _op("placeOrder")}, "/health": {"get": _op("getHealth")}},
        {"Order": {"type": "object"}, "Create": {"type": "object"}},
        [{"name": "orders", "description": "o"}, {"name": "health", "description": "h"}],
    )
    query = _document(
        {
            "/orders": {"get": _op("listOrders")},
            "/orders/{id}": {"get": _op("getOrder")},
            "/health": {"get": _op("getHealth")},
        },
        {"Order": {"type": "object"}, "Page": {"type": "object"}},
        [{"name": "orders", "description": "o"}, {"name": "live", "description": "l"}],
    )
    merged = merge_documents(api, query, title="Front door", version="1.2.3")
    assert merged["openapi"] == "3.1.0"
    assert merged["info"] == {"title": "Front door", "version": "1.2.3"}
    assert merged["servers"] == [{"url": "/"}]
    assert set(operations(merged)) == set(operations(api)) | set(operations(query))
    assert merged["paths"]["/orders"] == {"post": _op("placeOrder"), "get": _op("listOrders")}
    assert set(merged["components"]["schemas"]) == {"Order", "Create", "Page"}
    assert [tag["name"] for tag in merged["tags"]] == ["orders", "health", "live"]
    assert api["paths"]["/orders"] == {"post": _op("placeOrder")}  # the inputs are left as they were


def test_merge_refuses_what_the_two_say_differently() -> None:
    api = _document({"/orders": {"get": _op("listOrders")}})
    with pytest.raises(DocumentClash, match="GET /orders"):
        merge_documents(api, _document({"/orders": {"get": _op("listAll")}}), title="t", version="1")
    with pytest.raises(DocumentClash, match=r"components\.schemas\.Order"):
        merge_documents(
            _document({}, {"Order": {"type": "object"}}),
            _document({}, {"Order": {"type": "string"}}),
            title="t",
            version="1",
        )
    with pytest.raises(DocumentClash, match="tag orders"):
        merge_documents(
            _document({}, tags=[{"name": "orders", "description": "a"}]),
            _document({}, tags=[{"name": "orders", "description": "b"}]),
            title="t",
            version="1",
        )
    with pytest.raises(DocumentClash, match="operationId listOrders"):
        merge_documents(api, _document({"/all": {"get": _op("listOrders")}}), title="t", version="1")


def test_fastapi_s_422_which_we_never_send_is_left_out() -> None:
    document = _app().openapi()
    assert all("422" not in op["responses"] for op in operations(document).values())
    assert not {"HTTPValidationError", "ValidationError"} & set(document["components"]["schemas"])
    unsent = {"$ref": "#/components/schemas/HTTPValidationError"}
    kept: dict[str, Any] = {
        "paths": {
            "/x": {
                "get": {
                    "responses": {"422": {"content": {"application/json": {"schema": unsent}}}, "200": {}}
                }
            },
            "/y": {"post": {"responses": {"422": {"description": "a key reused"}}}},
        },
        "components": {
            "schemas": {"ValidationError": {}, "Uses": {"$ref": "#/components/schemas/ValidationError"}}
        },
    }
    without_unsent_422(kept)
    assert kept["paths"]["/x"]["get"]["responses"] == {"200": {}}
    assert kept["paths"]["/y"]["post"]["responses"] == {"422": {"description": "a key reused"}}, "its own 422"
    assert "ValidationError" in kept["components"]["schemas"], "still referred to: kept"
