"""The ingest API: validates orders and publishes them to Kafka (see routes/orders.py)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI

from orders_readmodel.store import OrderStore
from orders_runtime import tracing
from orders_web.auth import check_bind, install_auth
from orders_web.docs import install_docs
from orders_web.elsewhere import install_elsewhere
from orders_web.fastpath import include
from orders_web.http import NO_TELEMETRY, health_router, install_common, redis_write_check
from orders_web.metrics import RequestMetrics, ServiceMetrics
from orders_web.openapi import openapi_tags, operation_id, versioned_openapi
from orders_web.serving import freeze_startup_heap

from .deps import get_publisher, get_store
from .publisher import Publisher, SendMetrics
from .routes import asyncapi, home, orders
from .settings import Settings, get_settings

__all__ = ["create_app"]

REDIS_TIMEOUT = 2.0
"""Longest wait for one Redis command on a request's path."""


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
    app = FastAPI(
        title="Order ingest API",
        version="1.0.0",
        generate_unique_id_function=operation_id,
        openapi_tags=openapi_tags("orders", "health"),
        description="Places and cancels orders: validates them and publishes them to Kafka. "
        "Read them back on the query service.",
        lifespan=lifespan,
        telemetry=NO_TELEMETRY,
        docs_url=None,
        redoc_url=None,
    )
    versioned_openapi(app)
    app.state.settings = settings = settings or get_settings()
    check_bind(settings, settings.bind_host)
    install_common(app, settings.cors_origins)
    install_auth(app, settings)
    install_elsewhere(app, "query", settings.query_public_url)
    app.state.metrics = metrics = ServiceMetrics("api")
    app.state.send_metrics = SendMetrics(metrics)
    app.add_middleware(RequestMetrics, metrics=metrics)
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
        tracing.instrument(app)
    return app
