"""A tiny app for test_metrics_workers.py, served by `serve()` with several workers (each
worker process imports it by name: `workers_app:create_app`)."""

import os

from fastapi import FastAPI
from starlette.responses import PlainTextResponse, Response

from orders_web.http import NO_TELEMETRY, install_common
from orders_web.metrics import RequestMetrics, ServiceMetrics


def create_app() -> FastAPI:
    metrics = ServiceMetrics("tiny")
    app = FastAPI(telemetry=NO_TELEMETRY)
    install_common(app)
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.include_router(metrics.router())
    hits = metrics.counter("hits", "Requests to /items, all workers.")
    metrics.gauge("workers", "Workers running (each sets 1: the sum over live ones).").set(1)
    metrics.process_gauge("pid", "The process that answers the scrape.", os.getpid)

    @app.get("/items/{itemId}")
    async def item(itemId: str) -> Response:
        hits.inc()
        return PlainTextResponse(str(os.getpid()))

    return app
