"""A 405 that says where the method is served: the api and the query service share the paths of
`/api/orders`, each serving some of their methods, so a client that sent a read to the api (or a
write to the query service) is told which service serves it, and that the front door (the
gateway) serves both at the same path.

`install_elsewhere(app, "query", settings.query_public_url)` on the api, and
`install_elsewhere(app, "api", settings.api_public_url)` on the query service: a 405 then
answers, in the envelope,

    GET /api/orders is served by the query service: http://localhost:8001/api/orders

(the other service's public URL: the gateway's, where one runs, which serves both)

with `Link: <http://localhost:8001/api/orders>; rel="alternate"` and the `Allow` header of the
method-not-allowed answer. A method neither service serves there is a plain 405.

`SERVED` is which service serves which method of which path (the front door's split, with path
templates as in the OpenAPI documents); `tests/contract/test_openapi_documents.py` holds it to
the two services' documents.
"""

import re
import uuid
from collections.abc import Callable, Mapping
from functools import cache
from typing import Literal

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import compile_path

from .http import envelope

__all__ = ["SERVED", "SERVICE_NAMES", "Service", "install_elsewhere", "served_by"]

Service = Literal["api", "query"]

SERVICE_NAMES: Mapping[Service, str] = {"api": "ingest api", "query": "query service"}

SERVED: Mapping[Service, frozenset[tuple[str, str]]] = {
    "api": frozenset(
        {
            ("POST", "/api/orders"),
            ("POST", "/api/orders/batch"),
            ("POST", "/api/orders/{orderId}/cancel"),
        }
    ),
    "query": frozenset(
        {
            ("GET", "/api/orders"),
            ("GET", "/api/orders/{orderId}"),
            ("GET", "/api/orders/user/{userId}"),
            ("GET", "/api/orders/status/{status}"),
            ("GET", "/api/orders/stats"),
            ("GET", "/api/orders/{orderId}/history"),
            ("GET", "/api/orders/events"),
            ("GET", "/api/orders/{orderId}/events"),
            ("POST", "/api/orders/events/tickets"),
        }
    ),
}
"""The operations of each service under /api (health and docs are served by both)."""


def served_by(service: Service, method: str, path: str) -> bool:
    """Whether `service` serves `method` on the concrete `path` (HEAD with GET): a path
    parameter must be one the service takes (`orderId` a UUID, `userId` digits), so that
    `GET /api/orders/batch` is not sent to the query service's `/api/orders/{orderId}`."""
    method = "GET" if method == "HEAD" else method
    return any(served == method and _takes(template, path) for served, template in SERVED[service])


def _takes(template: str, path: str) -> bool:
    match = _pattern(template).fullmatch(path)
    return match is not None and all(
        _PARAMETERS.get(name, bool)(value) for name, value in match.groupdict().items()
    )


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


_PARAMETERS: Mapping[str, Callable[[str], bool]] = {"orderId": _is_uuid, "userId": str.isdigit}


def install_elsewhere(app: FastAPI, other: Service, other_url: str) -> None:
    """Answer a 405 of `app` by naming the `other` service (at `other_url`, its public base URL)
    when it serves that method on that path."""
    base = other_url.rstrip("/")

    async def method_elsewhere(request: Request, exc: Exception) -> Response:
        headers = dict(getattr(exc, "headers", None) or {})
        method, path = request.method, request.url.path
        if not served_by(other, method, path):
            detail = exc.detail if isinstance(exc, HTTPException) else "Method Not Allowed"
            return envelope(str(detail), status_code=405, headers=headers)
        url = f"{base}{path}"
        headers["Link"] = f'<{url}>; rel="alternate"'
        message = f"{method} {path} is served by the {SERVICE_NAMES[other]}: {url}"
        return envelope(message, status_code=405, headers=headers)

    app.add_exception_handler(405, method_elsewhere)


@cache
def _pattern(template: str) -> re.Pattern[str]:
    return compile_path(template)[0]
