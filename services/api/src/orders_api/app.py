"""The ingest API: validates orders and publishes them to Kafka (see routes/orders.py)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from starlette.middleware import Middleware

from orders_readmodel.store import OrderStore
from orders_runtime import tracing
from orders_web.apps import service_app
from orders_web.auth import Auth, AuthMiddleware, check_bind, install_auth
from orders_web.docs import install_docs
from orders_web.elsewhere import install_elsewhere
from orders_web.fastpath import DirectRoutes, include
from orders_web.http import (
    body_limit_middleware,
    cors_middleware,
    health_router,
    install_error_handlers,
    redis_write_check,
)
from orders_web.metrics import RequestMetrics, ServiceMetrics
from orders_web.serving import freeze_startup_heap

from .deps import get_publisher, get_store
from .publisher import Publisher, SendMetrics
from .routes import asyncapi, home, orders
from .settings import Settings, get_settings

__all__ = ["create_app"]

REDIS_TIMEOUT = 2.0
"""Longest wait for one Redis command on a request's path."""

PUBLIC_PATHS = ("/", "/asyncapi.json", "/asyncapi")
"""Served without a token besides the toolkit's own (docs, OpenAPI, health, metrics): the
redirect to /docs and the event contract, as a document and as a page."""
PUBLIC_PREFIXES = ("/asyncapi/assets/",)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The app's clients: made here, closed here, reached through `deps`."""
    settings: Settings = app.state.settings
    app.state.store = store = OrderStore.connect(settings, timeout=REDIS_TIMEOUT)
    app.state.metrics.watch_redis(store.redis)
    app.state.publisher = publisher = Publisher(settings, app.state.send_metrics)
    try:
        await store.load_functions()
        await publisher.start()
        await app.state.auth.start(store.redis, store.keys)
        freeze_startup_heap()
        yield
    finally:
        await app.state.auth.stop()
        await publisher.stop()
        await store.redis.aclose()
        tracing.shutdown()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    check_bind(settings, settings.bind_host)
    metrics = ServiceMetrics("api")
    auth = Auth(settings, PUBLIC_PATHS, PUBLIC_PREFIXES)
    app = service_app(
        title="Order ingest API",
        description="Places and cancels orders: validates them and publishes them to Kafka. "
        "Read them back on the query service.",
        tags=("orders", "health"),
        lifespan=lifespan,
        # In the order a request meets them.
        middleware=[
            Middleware(RequestMetrics, metrics=metrics),  # sees every answer, 401s and 429s too
            *cors_middleware(settings.cors_origins),  # before access control: a browser reads a 401
            Middleware(AuthMiddleware, auth=auth),  # before any route, the fast path's too
            body_limit_middleware(),
            Middleware(DirectRoutes),  # the fast path, innermost
        ],
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.send_metrics = SendMetrics(metrics)
    install_error_handlers(app)
    install_auth(app, auth)
    install_elsewhere(app, "query", settings.query_public_url)
    # Redis is ready when it takes a write: a full or read-only Redis still answers PING.
    health = health_router(
        lambda request: {
            "kafka": get_publisher(request).check,
            "redis": redis_write_check(partial(get_store(request).check_writes, "api")),
        }
    )
    # Health last: routes registered before a direct route are asked first on every request.
    include(app, home.router, asyncapi.router, orders.router, health, metrics.router())
    install_docs(app)
    if tracing.setup("api", app.state.settings):
        tracing.instrument(app)  # OpenTelemetry's middleware, outermost, when tracing is on
    return app
