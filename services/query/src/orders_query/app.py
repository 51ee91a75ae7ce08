"""The read API: every order read is served from the Redis read model, live ones included."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

from fastapi import FastAPI
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from starlette.middleware import Middleware

from orders_readmodel.store import OrderStore
from orders_readmodel.stream import UpdateStream
from orders_runtime import tracing
from orders_web.apps import service_app
from orders_web.auth import Auth, AuthMiddleware, check_bind, install_auth
from orders_web.docs import install_docs
from orders_web.elsewhere import install_elsewhere
from orders_web.fastpath import DirectRoutes, include
from orders_web.http import body_limit_middleware, health_router, install_error_handlers
from orders_web.metrics import RequestMetrics, ServiceMetrics
from orders_web.serving import freeze_startup_heap

from .deps import get_store
from .hub import Hub, LiveMetrics
from .routes import dashboard, live, orders
from .settings import Settings, get_settings
from .tickets import StreamTickets

__all__ = ["create_app"]

log = logging.getLogger(__name__)

REDIS_TIMEOUT = 5.0
"""Longest wait for one Redis command: a hung Redis gives 503s, not requests that never end."""

PUBLIC_PATHS = ("/", "/dashboard")
"""Served without a token besides the toolkit's own (docs, OpenAPI, health, metrics): the index
page and the dashboard's page; everything the dashboard reads needs a token."""
PUBLIC_PREFIXES = ("/dashboard/assets/",)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The app's clients: made here, closed here, reached through `deps`."""
    settings: Settings = app.state.settings
    metrics: ServiceMetrics = app.state.metrics
    app.state.store = store = OrderStore.connect(settings, timeout=REDIS_TIMEOUT)
    metrics.watch_redis(store.redis)
    reader = _reader(settings, metrics)
    shards = range(store.keys.shards)
    app.state.streams = tuple(UpdateStream(store.redis, store.keys, shard) for shard in shards)
    app.state.hub = hub = Hub(
        [UpdateStream(reader, store.keys, shard) for shard in shards],
        buffer=settings.sse_client_buffer,
        metrics=app.state.live_metrics,
    )
    app.state.tickets.start(store.redis, store.keys)
    try:
        await app.state.auth.start(store.redis, store.keys)
        try:  # the query service reads what the others wrote: in as many shards, or not at all
            await store.check_layout()
        except RedisError as exc:
            log.warning("cannot check the read model's shards at start-up: %r", exc)
        await hub.start()
        freeze_startup_heap()
        yield
    finally:
        await app.state.auth.stop()
        await hub.stop()
        await reader.aclose()
        await store.redis.aclose()
        tracing.shutdown()


def _reader(settings: Settings, metrics: ServiceMetrics) -> Redis:
    """The hub's client. Its blocking XREADs (2 s, one per shard, at once) each hold a connection
    of their own, from a pool with no bound (per node of a cluster: 100, more than the shards),
    and it does its own retrying."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "retry": Retry(NoBackoff(), 0),
        "socket_timeout": REDIS_TIMEOUT + 2,
        "socket_connect_timeout": REDIS_TIMEOUT,
        "client_name": metrics.client_name("stream"),
    }
    if settings.redis_cluster:
        # The cluster client sends each shard's read to the node that holds its slot.
        return cast(Redis, RedisCluster.from_url(settings.redis_url, **options))
    return Redis.from_url(settings.redis_url, **options)


def _task_count() -> int:
    return len(asyncio.all_tasks())


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    check_bind(settings, settings.bind_host)
    metrics = ServiceMetrics("query")
    tickets = StreamTickets(settings.stream_ticket_ttl_s)
    auth = Auth(settings, PUBLIC_PATHS, PUBLIC_PREFIXES, ticket_routes=live.TICKET_ROUTES, tickets=tickets)
    app = service_app(
        title="Order query API",
        description="Reads orders and their status from the read model that the processor keeps.",
        tags=("orders", "live", "health"),
        lifespan=lifespan,
        # In the order a request meets them (no CORS: the dashboard is served from here).
        middleware=[
            Middleware(RequestMetrics, metrics=metrics),  # sees every answer, 401s and 429s too
            Middleware(AuthMiddleware, auth=auth),  # before any route, the fast path's too
            body_limit_middleware(),
            Middleware(DirectRoutes),  # the fast path, innermost
        ],
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.tickets = tickets
    install_error_handlers(app)
    install_auth(app, auth)
    install_elsewhere(app, "api", settings.api_public_url)
    metrics.process_gauge(
        "asyncio_tasks", "Tasks in the event loop of the process that answers (per worker).", _task_count
    )
    app.state.live_metrics = LiveMetrics(metrics)  # exported from the start, at 0
    # The query service only reads, and a full (OOM) or read-only Redis still serves plain
    # reads: so a PING, not the write probe of the api and the processor. (Its reads queued
    # in MULTI are refused while Redis is full: those requests answer 503.)
    health = health_router(lambda request: {"redis": get_store(request).redis.ping})
    # Routes registered before a direct route are asked first on every request to it:
    # the live routes go first (their paths overlap the order's), health and assets last.
    include(app, live.router, orders.router, health, metrics.router(), dashboard.router)
    install_docs(app)
    if tracing.setup("query", app.state.settings):
        tracing.instrument(app)  # OpenTelemetry's middleware, outermost, when tracing is on
    return app
