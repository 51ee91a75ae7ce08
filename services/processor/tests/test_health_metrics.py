"""The processor's /metrics through its health app: the worker's counters under their names,
transitions by status, request latency, and its Redis connections counted by the server."""

from collections.abc import Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from starlette.applications import Starlette

from orders_contract.events import OrderCancelledEvent, decode_event, encode_cancelled
from orders_contract.keys import Keys
from orders_contract.models import Order, utc_now
from orders_contract.models import OrderStatus as S
from orders_processor.health import create_health_app
from orders_processor.metrics import current_value
from orders_processor.settings import Settings
from orders_processor.worker import Worker
from orders_readmodel.store import OrderStore

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(app: Starlette) -> Samples:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.get("/metrics")
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def unlabelled(found: Samples, name: str) -> float:
    return found[(name, frozenset())]


def transitions(found: Samples, status: S) -> float:
    return found[("processor_order_transitions_total", frozenset({("status", status.value)}))]


def applied(worker: Worker) -> dict[S, float]:
    """The transitions the worker applied, by status (those it applied none of left out)."""
    counter = worker.handlers.metrics.transitions
    return {s: n for s in S if (n := current_value(counter, status=s.value))}


async def test_the_workers_counters_keep_their_names() -> None:
    worker = Worker(Settings(), OrderStore(Redis(), Keys("test:metrics:")))  # never connects
    consumed, handled = worker.consumer.metrics, worker.handlers.metrics
    consumed.received.inc(7)
    handled.completed.inc(5)
    handled.replayed.inc(1)
    handled.abandoned.inc(1)
    consumed.in_flight.set(2)
    app = create_health_app(worker)
    found = await scrape(app)
    assert unlabelled(found, "processor_orders_received_total") == 7
    assert unlabelled(found, "processor_orders_completed_total") == 5
    assert unlabelled(found, "processor_orders_replayed_total") == 1
    assert unlabelled(found, "processor_orders_abandoned_total") == 1
    assert unlabelled(found, "processor_orders_dead_lettered_total") == 0
    assert unlabelled(found, "processor_orders_in_flight") == 2
    assert unlabelled(found, "processor_orders_assigned_partitions") == 0
    for status in (S.PROCESSING, S.COMPLETED, S.CANCELLED):
        assert transitions(found, status) == 0, "every status the processor applies, from the start"
    again = await scrape(app)
    latency = ("method", "GET"), ("route", "/metrics"), ("status", "200")
    assert again[("processor_http_request_duration_seconds_count", frozenset(latency))] == 1


@pytest.mark.redis
async def test_transitions_are_counted_by_status(store: OrderStore, new_order: Callable[..., Order]) -> None:
    worker = Worker(Settings(processing_delay_ms=0), store)
    done, cancelled = new_order(), new_order()
    await worker.handlers.placed(done)  # created, PROCESSING, COMPLETED
    await worker.handlers.placed(done)  # a replay applies nothing
    await store.create(cancelled)  # as the api writes it through
    event = decode_event(encode_cancelled(cancelled.order_id, utc_now()))
    assert isinstance(event, OrderCancelledEvent)
    await worker.handlers.cancelled(event)
    found = await scrape(create_health_app(worker))
    assert [transitions(found, s) for s in (S.PLACED, S.PROCESSING, S.COMPLETED, S.CANCELLED)] == [1, 1, 1, 1]
    assert unlabelled(found, "processor_orders_replayed_total") == 1


@pytest.mark.redis
async def test_placed_is_counted_only_when_the_processor_created_the_order(
    store: OrderStore, new_order: Callable[..., Order]
) -> None:
    worker = Worker(Settings(processing_delay_ms=0), store)
    written_through, not_yet, cancelled = new_order(), new_order(), new_order()
    await store.create(written_through)  # the api's write-through: PLACED is the api's
    await store.create(cancelled)
    await store.transition(cancelled.order_id, S.CANCELLED)  # the api cancelled it before
    await worker.handlers.placed(written_through, "e1")
    assert applied(worker) == {S.PROCESSING: 1, S.COMPLETED: 1}
    await worker.handlers.placed(not_yet, "e2")  # the event came before (or without) the write-through
    await worker.handlers.placed(not_yet, "e2")  # a replay creates nothing
    await worker.handlers.placed(cancelled, "e3")
    assert applied(worker) == {S.PLACED: 1, S.PROCESSING: 2, S.COMPLETED: 2}
    found = await scrape(create_health_app(worker))
    assert transitions(found, S.PLACED) == 1


@pytest.mark.redis
async def test_its_redis_connections_are_named_and_counted(test_env: dict[str, str]) -> None:
    store = OrderStore.connect(Settings(redis_url=test_env["REDIS_URL"]))
    worker = Worker(Settings(), store)
    app = create_health_app(worker, redis=store.redis)  # before the first command, as __main__ does
    try:
        await store.redis.ping()
        found = await scrape(app)
        assert unlabelled(found, "processor_redis_connections") >= 1
        assert unlabelled(found, "processor_redis_connections_in_use") == 0
    finally:
        await store.redis.aclose()
