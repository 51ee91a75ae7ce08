"""The processor's small HTTP side: health checks and Prometheus metrics."""

import contextlib
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI
from redis.asyncio import Redis

from orders_web.http import NO_TELEMETRY, health_router, install_common, redis_write_check
from orders_web.metrics import RequestMetrics

from .relay import Relay
from .worker import Worker

__all__ = ["HealthServer", "create_health_app"]


def create_health_app(worker: Worker, redis: Redis | None = None, relay: Relay | None = None) -> FastAPI:
    """Health and metrics of `worker` (and `relay`), on the worker's `ServiceMetrics`; `redis`:
    the worker's store client, whose connections are then named and counted (see
    `ServiceMetrics.watch_redis`)."""
    app = FastAPI(
        title="Order processor", version="0.1.0", docs_url=None, redoc_url=None, telemetry=NO_TELEMETRY
    )
    install_common(app)
    app.state.metrics = metrics = worker.service_metrics
    if relay is not None and relay.service_metrics is not metrics:
        for collector in relay.metrics.collectors():  # a relay made with metrics of its own
            metrics.register(collector)
    if redis is not None:
        metrics.watch_redis(redis)
    app.add_middleware(RequestMetrics, metrics=metrics)
    redis_ready = redis_write_check(worker.redis_ready)  # "down: refuses writes (OOM ...)" when full
    app.include_router(health_router(lambda request: {"kafka": worker.kafka_ready, "redis": redis_ready}))
    app.include_router(metrics.router())
    return app


class HealthServer(uvicorn.Server):
    """uvicorn inside the worker's event loop; the worker, not uvicorn, owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
