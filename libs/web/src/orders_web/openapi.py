"""OpenAPI documents made for generated clients: human operation ids, shared tags, a version that
follows the API, and the front door's one document merged from both services' own.

- `operation_id`: FastAPI's `generate_unique_id_function`. The id is the camelCase of the route
  function's name (`place_order` -> `placeOrder`), so it stays what a person wrote when a path
  or method changes, and generated clients name their functions and classes after it
  (`place_order.sync(...)`).
- `TAGS` and `openapi_tags(...)`: every tag's one description, so that the two services
  describe a tag they share (`orders`, `health`) alike and their documents merge.
- `versioned_openapi(app)`: the document's `info.version` becomes `api_version(document)`.
- `merge_documents(api, query, ...)`: the front door's document (the gateway on port 5000
  serves both services on one origin).
"""

import hashlib
from collections.abc import Callable, Mapping
from copy import deepcopy
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.routing import APIRoute

__all__ = [
    "TAGS",
    "DocumentClash",
    "api_version",
    "merge_documents",
    "openapi_tags",
    "operation_id",
    "operations",
    "versioned_openapi",
]

TAGS: Mapping[str, str] = {
    "orders": "Orders: place, batch and cancel them (the ingest api); read one, its history, "
    "the lists (all, by user, by status) and the statistics (the query service).",
    "live": "Server-Sent Events of order transitions, resumable with `Last-Event-ID`, and the "
    "single-use tickets that open them (the query service).",
    "health": "Liveness and readiness of the service that answers.",
}
"""Every tag of both services, with its description: one text per tag, in both documents."""

_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


class DocumentClash(ValueError):
    """The two documents cannot be merged: the same method on the same path, or a schema,
    tag or operation id of the same name, that differs between them."""


def operation_id(route: APIRoute) -> str:
    """The camelCase of the route function's name: `place_order` -> `placeOrder`."""
    first, *rest = route.name.strip("_").split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest if part)


def openapi_tags(*names: str) -> list[dict[str, str]]:
    """`FastAPI(openapi_tags=...)` for the tags a service uses, described as in `TAGS`."""
    return [{"name": name, "description": TAGS[name]} for name in names]


def api_version(document: Mapping[str, Any], base: str | None = None) -> str:
    """`<base>+<hash>`: `base` (by default the document's own `info.version` up to any `+`) is
    the semantic version a person keeps in code (a new major for a breaking change), `hash` the
    first 8 hex digits of the SHA-256 of the canonical JSON (sorted keys, no spaces) of the
    document's `paths` and `components`.

    So the version changes whenever the API does, with no one to remember it: a new or removed
    operation, parameter, answer or schema field, or a changed description (which a generated
    client copies into its docstrings), while `info` itself (title, this version) does not count.
    Build metadata (after `+`) does not order versions in semver: compare versions for equality,
    and the base for compatibility."""
    if base is None:
        base = str(document.get("info", {}).get("version", "0.0.0")).split("+", 1)[0]
    canonical = orjson.dumps(
        {"paths": document.get("paths", {}), "components": document.get("components", {})},
        option=orjson.OPT_SORT_KEYS,
    )
    return f"{base}+{hashlib.sha256(canonical).hexdigest()[:8]}"


def versioned_openapi(app: FastAPI) -> None:
    """Make `app.openapi()` carry `api_version` as `info.version`, the app's `version` as its
    base. Call it before anything else wraps `app.openapi` (`install_auth` adds the security
    schemes of `AUTH_MODE=oidc` after it): the version is then that of the API, the same in
    every mode."""
    make: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = without_unsent_422(make())
        document["info"]["version"] = api_version(document, app.version.split("+", 1)[0])
        return document

    app.openapi = openapi  # type: ignore[method-assign]


_FASTAPI_422_SCHEMAS = ("HTTPValidationError", "ValidationError")


def _is_fastapi_default_422(response: Any) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {}) if response else {}
    return bool(schema.get("$ref") == "#/components/schemas/HTTPValidationError")


def without_unsent_422(document: dict[str, Any]) -> dict[str, Any]:
    """The document without FastAPI's default 422 answers (`HTTPValidationError`), which our
    services never send: an invalid request is a 400 with the error envelope (`orders_web.http`),
    documented on every route that takes input. Left in, every generated client would carry a
    response type that never arrives. A 422 a route declares itself (an Idempotency-Key reused
    with another body) stays. Its schemas go too, once nothing refers to them."""
    for operation in operations(document).values():
        responses = operation.get("responses", {})
        if _is_fastapi_default_422(responses.get("422")):
            del responses["422"]
    schemas = document.get("components", {}).get("schemas", {})
    kept = {name: schema for name, schema in schemas.items() if name not in _FASTAPI_422_SCHEMAS}
    rest = orjson.dumps({**document, "components": {**document.get("components", {}), "schemas": kept}})
    if not any(f"#/components/schemas/{name}".encode() in rest for name in _FASTAPI_422_SCHEMAS):
        document.setdefault("components", {})["schemas"] = kept
    return document


def operations(document: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """Every operation of a document by (METHOD, path)."""
    return {
        (method.upper(), path): operation
        for path, item in document.get("paths", {}).items()
        for method, operation in item.items()
        if method in _METHODS
    }


def merge_documents(
    api: Mapping[str, Any], query: Mapping[str, Any], *, title: str, version: str, description: str = ""
) -> dict[str, Any]:
    """One OpenAPI 3.1 document of the front door: every operation of both documents under one
    origin (`servers: [{"url": "/"}]`).

    A path both serve with different methods holds the methods of both. The same method on the
    same path is a `DocumentClash` unless both documents describe it identically (the health
    checks: the gateway answers them from one service, and both answer alike). Components
    (schemas, ...) of the same name must be identical in both; tags are merged in order, those
    of the same name must say the same. Operation ids stay unique. `info.version` is `version`
    as given (`api_version(merged, base)` is one to give)."""
    paths: dict[str, dict[str, Any]] = {}
    for document in (api, query):
        for path, item in document.get("paths", {}).items():
            merged = paths.setdefault(path, {})
            for key, value in item.items():
                if key in merged and merged[key] != value:
                    what = f"{key.upper()} {path}" if key in _METHODS else f"{path} ({key})"
                    raise DocumentClash(f"{what} is described differently by the two documents")
                merged[key] = deepcopy(value)
    ids: dict[str, tuple[str, str]] = {}
    for where, operation in operations({"paths": paths}).items():
        op_id = operation.get("operationId")
        if op_id is not None and ids.setdefault(op_id, where) != where:
            raise DocumentClash(f"operationId {op_id} names both {ids[op_id]} and {where}")
    result: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, **({"description": description} if description else {})},
        "servers": [{"url": "/"}],
        "paths": paths,
    }
    components = _merge_named(api.get("components", {}), query.get("components", {}), "components")
    if components:
        result["components"] = components
    tags = _merge_tags(api.get("tags", []), query.get("tags", []))
    if tags:
        result["tags"] = tags
    return result


def _merge_named(first: Mapping[str, Any], second: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Components section by section (`schemas`, `securitySchemes`, ...), entry by entry."""
    merged: dict[str, Any] = {}
    for section in [*first, *(name for name in second if name not in first)]:
        entries = dict(deepcopy(first.get(section, {})))
        for name, value in second.get(section, {}).items():
            if name in entries and entries[name] != value:
                raise DocumentClash(f"{where}.{section}.{name} differs between the two documents")
            entries[name] = deepcopy(value)
        merged[section] = entries
    return merged


def _merge_tags(first: list[dict[str, Any]], second: list[dict[str, Any]]) -> list[dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for tag in [*first, *second]:
        known = merged.setdefault(tag["name"], deepcopy(tag))
        if known != tag:
            raise DocumentClash(f"tag {tag['name']} is described differently by the two documents")
    return list(merged.values())
