"""The processor's small HTTP side: health checks and Prometheus metrics."""

import contextlib
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI
from starlette.responses import PlainTextResponse

from orders_common.http import NO_TELEMETRY, health_router, install_common, metrics_text

from .worker import Worker

__all__ = ["HealthServer", "create_health_app"]


def create_health_app(worker: Worker, cors_origins: str = "") -> FastAPI:
    app = FastAPI(
        title="Order processor", version="0.1.0", docs_url=None, redoc_url=None, telemetry=NO_TELEMETRY
    )
    install_common(app, cors_origins)
    app.include_router(health_router({"kafka+redis": worker.ready}))

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    async def metrics() -> str:
        m = worker.metrics
        counters = {
            "orders_received_total": ("counter", m.received, "Records taken from Kafka."),
            "orders_completed_total": ("counter", m.completed, "Orders this process completed."),
            "orders_replayed_total": ("counter", m.replayed, "Records whose work was already done."),
            "orders_cancelled_total": ("counter", m.cancelled, "Cancellations this process applied."),
            "orders_found_cancelled_total": (
                "counter",
                m.found_cancelled,
                "Orders the api cancelled before processing began.",
            ),
            "orders_abandoned_total": ("counter", m.abandoned, "Events ignored: the api answered 503."),
            "orders_dead_lettered_total": ("counter", m.dead_lettered, "Records sent to the DLQ."),
            "orders_retries_total": ("counter", m.retries, "Retries after transient errors."),
            "orders_commits_total": ("counter", m.commits, "Offset commits."),
            "orders_commit_failures_total": ("counter", m.commit_failures, "Failed commits."),
            "orders_in_flight": ("gauge", m.in_flight, "Records being processed now."),
            "orders_assigned_partitions": ("gauge", len(m.assigned), "Partitions owned now."),
        }
        return metrics_text("processor_", counters)

    return app


class HealthServer(uvicorn.Server):
    """uvicorn inside the worker's event loop; the worker, not uvicorn, owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
