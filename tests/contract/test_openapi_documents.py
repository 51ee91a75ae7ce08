"""The committed OpenAPI documents (docs/openapi) are the ones the apps publish, and the front
door's holds every operation of both services as their own documents describe it: so every
change of the API shows in review, and one generated client reaches all of it."""

import re
from functools import cache
from typing import Any

import orjson
import pytest

from orders_stack.openapi_docs import OUTPUT, documents, render
from orders_web.elsewhere import SERVED
from orders_web.openapi import TAGS, api_version, operations

NAMES = ("api", "query", "front-door")


@cache
def _live() -> dict[str, dict[str, Any]]:
    return documents()


def _committed(name: str) -> dict[str, Any]:
    path = OUTPUT / f"{name}.json"
    assert path.exists(), f"{path} is missing: run `make openapi` and commit docs/openapi"
    document: dict[str, Any] = orjson.loads(path.read_bytes())
    return document


@pytest.mark.parametrize("name", NAMES)
def test_the_committed_document_is_the_live_one(name: str) -> None:
    live = _live()[name]
    committed = _committed(name)
    assert committed == live, (
        f"docs/openapi/{name}.json differs from what the apps publish ({committed['info']['version']} "
        f"committed, {live['info']['version']} live): run `make openapi` and commit the change"
    )
    assert (OUTPUT / f"{name}.json").read_bytes() == render(live), "run `make openapi` (formatting)"


@pytest.mark.parametrize("service", ["api", "query"])
def test_the_front_door_holds_every_operation_of_the_service(service: str) -> None:
    own, front = _live()[service], _live()["front-door"]
    front_operations = operations(front)
    for where, operation in operations(own).items():
        assert front_operations.get(where) == operation, f"{where} of the {service} is not in the front door"
    for section, entries in own.get("components", {}).items():
        for name, value in entries.items():
            assert front["components"][section].get(name) == value, f"components.{section}.{name}"
    front_tags = {tag["name"]: tag for tag in front["tags"]}
    for tag in own["tags"]:
        assert front_tags[tag["name"]] == tag


def test_the_front_door_holds_nothing_else() -> None:
    live = _live()
    both = set(operations(live["api"])) | set(operations(live["query"]))
    assert set(operations(live["front-door"])) == both
    assert live["front-door"]["servers"] == [{"url": "/"}]


@pytest.mark.parametrize("name", NAMES)
def test_operations_are_made_for_clients(name: str) -> None:
    document = _live()[name]
    described = {tag["name"] for tag in document["tags"] if tag.get("description")}
    ids = [op["operationId"] for op in operations(document).values()]
    assert len(ids) == len(set(ids)), "operation ids are unique"
    for (method, path), operation in operations(document).items():
        where = f"{method} {path}"
        assert re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)+", operation["operationId"]), where
        assert operation["tags"], where
        assert set(operation["tags"]) <= described, f"{where}: a tag without a description"
        assert all(document_tag in TAGS for document_tag in operation["tags"]), where
        success = [code for code in operation["responses"] if code.startswith("2")]
        assert success, where
        content = operation["responses"][success[0]].get("content", {})
        json_schema = content.get("application/json", {}).get("schema")
        assert json_schema or "text/event-stream" in content, f"{where}: no response model"
        if json_schema:
            assert "$ref" in json_schema, f"{where}: the response is not a named model"
        unsent = operation["responses"].get("422", {}).get("content", {}).get("application/json", {})
        assert unsent.get("schema") != {"$ref": "#/components/schemas/HTTPValidationError"}, (
            f"{where}: invalid input is a 400, never FastAPI's 422"
        )
        if operation.get("parameters") or operation.get("requestBody"):
            assert "400" in operation["responses"], f"{where}: takes input, so says what a 400 is"
    assert "/metrics" not in document["paths"]
    assert "HTTPValidationError" not in document.get("components", {}).get("schemas", {})
    if name != "query":
        (place,) = [op for op in operations(document).values() if op["operationId"] == "placeOrder"]
        assert "422" in place["responses"], "an Idempotency-Key reused with another body is a 422"


@pytest.mark.parametrize("name", NAMES)
def test_the_version_changes_with_the_api(name: str) -> None:
    document = _live()[name]
    assert document["info"]["version"] == api_version(document)


def test_each_405_names_the_service_its_document_says() -> None:
    live = _live()
    for service in ("api", "query"):
        served = {where for where in operations(live[service]) if where[1].startswith("/api/")}
        assert served == SERVED[service], f"orders_web.elsewhere.SERVED[{service!r}]"
