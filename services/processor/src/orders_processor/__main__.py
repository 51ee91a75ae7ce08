"""`python -m orders_processor`: consume until SIGTERM or SIGINT, then drain and commit."""

import asyncio
import logging
import signal

import uvicorn
import uvloop

from orders_readmodel.store import OrderStore
from orders_runtime import tracing
from orders_web.metrics import ServiceMetrics
from orders_web.serving import configure_logging, freeze_startup_heap, http_options

from .health import HealthServer, create_health_app
from .relay import Relay
from .settings import Settings, get_settings
from .worker import Worker

log = logging.getLogger("orders_processor")

REDIS_TIMEOUT = 10.0
"""Longest wait for one Redis command; a command that times out is retried (idempotently)."""


async def run(settings: Settings) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    store = OrderStore.connect(settings, timeout=REDIS_TIMEOUT)
    metrics = ServiceMetrics("processor")
    worker = Worker(settings, store, metrics)
    relay = Relay(settings, store, metrics)
    health = HealthServer(
        uvicorn.Config(
            create_health_app(worker, redis=store.redis, relay=relay),
            host=settings.bind_host,
            port=settings.processor_port,
            lifespan="off",
            log_level="warning",
            access_log=False,
            **http_options(settings),
        )
    )
    health_task = asyncio.create_task(health.serve())
    relay_task: asyncio.Task[None] | None = None
    relay_failure: BaseException | None = None
    try:
        log.info(
            "processor starting: group %s, topic %s, delay %d ms",
            settings.kafka_consumer_group,
            settings.kafka_orders_topic,
            settings.processing_delay_ms,
        )
        await store.load_functions()
        freeze_startup_heap()
        relay_task = asyncio.create_task(relay.run(stopping))  # publishes the shards whose leases it holds
        # The relay ends before `stopping` only when it refuses the status topic: the processor stops.
        relay_task.add_done_callback(lambda _: stopping.set())
        await worker.run(stopping)
    finally:
        stopping.set()
        if relay_task is not None:  # its failure is logged, never hides the worker's own
            (outcome,) = await asyncio.gather(relay_task, return_exceptions=True)
            if isinstance(outcome, Exception):
                log.error("relay stopped with %r", outcome)
                relay_failure = outcome
        health.should_exit = True
        await health_task
        await store.redis.aclose()
        log.info("processor stopped")
    if relay_failure is not None:
        raise SystemExit(f"processor stopped: {relay_failure}")


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, "processor")
    with tracing.traced("processor", settings):
        uvloop.run(run(settings))


if __name__ == "__main__":
    main()
