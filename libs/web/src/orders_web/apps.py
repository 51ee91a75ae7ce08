"""How each service's FastAPI app is made, the same way for every one of them.

Our OpenAPI conventions (operation ids from the route functions' names, described tags, an
`info.version` that follows the API: `orders_web.openapi`), FastAPI's own telemetry hooks off
(`NO_TELEMETRY`), and no FastAPI docs routes (`orders_web.docs` serves Swagger UI without a
CDN). The middleware list stays the caller's: each `create_app` declares it, in the order a
request meets it.
"""

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI
from starlette.middleware import Middleware

from orders_web.http import NO_TELEMETRY
from orders_web.openapi import openapi_tags, operation_id, versioned_openapi

__all__ = ["API_VERSION", "service_app"]

API_VERSION = "1.0.0"
"""The human part of `info.version`; the part after `+` follows the documents by itself."""


def service_app(
    *,
    title: str,
    description: str,
    tags: Sequence[str],
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]],
    middleware: Sequence[Middleware],
) -> FastAPI:
    app = FastAPI(
        title=title,
        version=API_VERSION,
        description=description,
        generate_unique_id_function=operation_id,
        openapi_tags=openapi_tags(*tags),
        lifespan=lifespan,
        telemetry=NO_TELEMETRY,
        docs_url=None,
        redoc_url=None,
        middleware=list(middleware),
    )
    # Before install_auth, which adds the security schemes of AUTH_MODE=oidc to the document:
    # the version is then that of the API, the same in every mode.
    versioned_openapi(app)
    return app
