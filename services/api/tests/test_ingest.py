"""The ingest API: validation without Kafka, and publishing on a real Kafka."""

import asyncio
import json
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any

import httpx
import pytest

from orders_api.app import create_app
from orders_api.settings import Settings
from orders_contract.events import OrderPlacedEvent
from orders_contract.models import OrderStatus
from orders_readmodel.store import OrderStore
from orders_stack import Infra, free_port
from orders_stack.ledger import read_records

GOOD = {"userId": 1, "productName": "Gaming Laptop", "quantity": 2, "price": 1299.99}

Client = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def api() -> Client:
    """`async with api(**settings) as client`: the app with its lifespan, over ASGI."""

    @asynccontextmanager
    async def running(**settings: object) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(Settings(**settings))  # type: ignore[arg-type]
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                yield client

    return running


@pytest.fixture
def silent_kafka() -> Iterator[dict[str, object]]:
    """Settings for a Kafka that accepts connections and never answers (hung, or far too slow)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(200)
        yield {
            "kafka_bootstrap_servers": f"127.0.0.1:{server.getsockname()[1]}",
            "kafka_send_timeout_ms": 500,
        }


def nowhere() -> dict[str, object]:
    """Settings for a Kafka that is not there: nothing listens on the port."""
    return {"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}", "kafka_send_timeout_ms": 500}


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({**GOOD, "userId": 0}, {"userId"}),
        ({**GOOD, "quantity": 1001, "price": 0.001}, {"quantity", "price"}),
        ({**GOOD, "productName": "x" * 201}, {"productName"}),
        ({**GOOD, "coupon": "FREE"}, {"coupon"}),
        ({k: v for k, v in GOOD.items() if k != "price"}, {"price"}),
    ],
)
async def test_invalid_orders_get_400_with_field_errors(
    api: Client, body: dict[str, object], fields: set[str]
) -> None:
    async with api(**nowhere()) as client:
        response = await client.post("/api/orders", json=body)
    assert response.status_code == 400
    payload = response.json()
    assert payload["success"] is False
    assert payload["data"] is None
    assert {e["field"] for e in payload["errors"]} == fields
    assert all(e["reason"] for e in payload["errors"])


@pytest.mark.parametrize("raw", [b"{", b"", b"[]", b'"order"', b"\xff\xfe"])
async def test_malformed_bodies_get_400(api: Client, raw: bytes) -> None:
    async with api(**nowhere()) as client:
        response = await client.post("/api/orders", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "body"


async def test_wrong_content_type_and_huge_bodies(api: Client) -> None:
    async with api(**nowhere()) as client:
        text = await client.post(
            "/api/orders", content=json.dumps(GOOD), headers={"Content-Type": "text/plain"}
        )
        huge = await client.post("/api/orders", json={**GOOD, "productName": "x" * 70_000})
        untyped = await client.post("/api/orders", content=json.dumps(GOOD))
    assert text.status_code == 415
    assert untyped.status_code == 415
    assert huge.status_code == 413


async def test_cors_lets_the_dashboard_place_orders(api: Client) -> None:
    """CORS_ORIGINS names the browser origins (the query service's dashboard) that may call the api."""
    dashboard = "http://localhost:8001"
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    async with api(**nowhere(), cors_origins=f"{dashboard}, http://127.0.0.1:8001") as client:
        allowed = await client.options("/api/orders", headers={"Origin": dashboard, **preflight})
        refused = await client.options("/api/orders", headers={"Origin": "http://evil.example", **preflight})
        invalid = await client.post("/api/orders", json={}, headers={"Origin": dashboard})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == dashboard
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "access-control-allow-origin" not in refused.headers
    assert invalid.headers["access-control-allow-origin"] == dashboard
    assert "Location" in invalid.headers["access-control-expose-headers"]
    async with api(**nowhere()) as client:  # none by default
        default = await client.options("/api/orders", headers={"Origin": dashboard, **preflight})
    assert "access-control-allow-origin" not in default.headers


@pytest.mark.parametrize("kafka", ["down", "silent"])
async def test_kafka_down_means_503_soon_never_2xx(
    api: Client, kafka: str, silent_kafka: dict[str, object]
) -> None:
    async with api(**(nowhere() if kafka == "down" else silent_kafka)) as client:
        started = time.monotonic()
        responses = await asyncio.gather(*(client.post("/api/orders", json=GOOD) for _ in range(40)))
        elapsed = time.monotonic() - started
        ready = await client.get("/health/ready")
    assert {r.status_code for r in responses} == {503}
    assert all(r.headers["Retry-After"].isdigit() for r in responses)
    assert all(r.json()["success"] is False for r in responses)
    # Each request waits at most KAFKA_SEND_TIMEOUT_MS (0.5 s), also in a burst:
    # one after another behind a reconnect lock they would take 20 s.
    assert elapsed < 10, f"a burst of requests took {elapsed:.1f}s"
    assert ready.status_code == 503


async def test_root_redirects_to_swagger(api: Client) -> None:
    async with api(**nowhere()) as client:
        root = await client.get("/")
        docs = await client.get("/docs")
        schema = (await client.get("/openapi.json")).json()
    assert root.status_code == 307
    assert root.headers["location"] == "/docs"
    assert docs.status_code == 200
    ref = schema["paths"]["/api/orders"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    body = schema["components"]["schemas"][ref["$ref"].rsplit("/", 1)[-1]]
    assert body["additionalProperties"] is False
    assert set(body["required"]) == {"userId", "productName", "quantity", "price"}


@pytest.fixture
def real(test_env: dict[str, str]) -> dict[str, object]:
    """Settings for this test's own topic and key prefix on the real Kafka and Redis."""
    return {
        "kafka_bootstrap_servers": test_env["KAFKA_BOOTSTRAP_SERVERS"],
        "kafka_orders_topic": test_env["KAFKA_ORDERS_TOPIC"],
        "kafka_dlq_topic": test_env["KAFKA_DLQ_TOPIC"],
        "redis_url": test_env["REDIS_URL"],
        "redis_key_prefix": test_env["REDIS_KEY_PREFIX"],
    }


async def read_topic(bootstrap: str, topic: str, count: int) -> list[tuple[str, dict[str, Any]]]:
    """The first `count` records of a topic as (key, JSON value)."""
    records = await read_records(bootstrap, topic, count)
    return [((r.key or b"").decode(), json.loads(r.value or b"null")) for r in records]


@pytest.mark.kafka
async def test_accepted_order_is_in_kafka_keyed_by_its_id(
    api: Client, test_env: dict[str, str], real: dict[str, object], store: OrderStore
) -> None:
    topic = test_env["KAFKA_ORDERS_TOPIC"]
    async with api(**real, query_public_url="http://query.example:8001") as client:
        assert (await client.get("/health/ready")).status_code == 200
        responses = await asyncio.gather(
            *(client.post("/api/orders", json={**GOOD, "userId": n}) for n in (1, 2, 3))
        )
    assert [r.status_code for r in responses] == [202, 202, 202]
    accepted = {r.json()["data"]["orderId"]: r for r in responses}
    for order_id, response in accepted.items():
        assert response.headers["Location"] == f"http://query.example:8001/api/orders/{order_id}"
        assert response.json()["data"]["status"] == "PLACED"

    seen = dict(await read_topic(test_env["KAFKA_BOOTSTRAP_SERVERS"], topic, 3))
    assert set(seen) == set(accepted)
    for order_id, event in seen.items():
        assert event["type"] == "order.placed"
        assert event["subject"] == order_id
        assert event["data"]["totalAmount"] == 2599.98
        # Written through: readable at once, before any processor ran.
        order = await store.get(order_id)
        assert order is not None
        assert order.model_dump(mode="json") == accepted[order_id].json()["data"]


@pytest.mark.kafka
async def test_same_idempotency_key_fifty_times_at_once_is_one_order(
    api: Client, test_env: dict[str, str], real: dict[str, object], store: OrderStore
) -> None:
    headers = {"Idempotency-Key": "checkout-7f3a"}
    async with api(**real) as client:
        responses = await asyncio.gather(
            *(client.post("/api/orders", json=GOOD, headers=headers) for _ in range(50))
        )
        other_user = await client.post("/api/orders", json={**GOOD, "userId": 2}, headers=headers)
        other_body = await client.post("/api/orders", json={**GOOD, "quantity": 3}, headers=headers)
        bad_key = await client.post("/api/orders", json=GOOD, headers={"Idempotency-Key": "x" * 256})
    assert {r.status_code for r in responses} == {202}
    ids = {r.json()["data"]["orderId"] for r in responses}
    assert len(ids) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 49
    assert other_user.status_code == 202  # keys are per user
    assert other_user.json()["data"]["orderId"] not in ids
    assert other_body.status_code == 422
    assert bad_key.status_code == 400
    (order_id,) = ids
    assert len(await store.history(order_id)) == 1
    assert await store.count(store.keys.all_orders) == 2

    # Long after, even once the order moved on, the key still gives the same order.
    await store.transition(order_id, OrderStatus.PROCESSING)
    await store.transition(order_id, OrderStatus.COMPLETED)
    async with api(**real) as client:
        again = await client.post("/api/orders", json=GOOD, headers=headers)
    assert again.status_code == 202
    assert again.json()["data"]["orderId"] == order_id
    assert again.json()["data"]["status"] == "COMPLETED"


@pytest.mark.kafka
async def test_cancel_decides_against_the_current_status(
    api: Client, test_env: dict[str, str], real: dict[str, object], store: OrderStore
) -> None:
    async with api(**real) as client:
        first, second = [(await client.post("/api/orders", json=GOOD)).json()["data"] for _ in range(2)]
        await store.transition(second["orderId"], OrderStatus.PROCESSING)  # as the processor would
        cancelled = await client.post(f"/api/orders/{first['orderId']}/cancel")
        again = await client.post(f"/api/orders/{first['orderId']}/cancel")
        too_late = await client.post(f"/api/orders/{second['orderId']}/cancel")
        unknown = await client.post(f"/api/orders/{uuid.uuid4()}/cancel")
        not_an_id = await client.post("/api/orders/..%2F..%2Fetc%2Fpasswd/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["data"]["status"] == "CANCELLED"
    assert cancelled.json()["data"]["cancelledAt"]
    assert again.status_code == 200
    assert again.json()["message"] == "Order was already cancelled"
    assert too_late.status_code == 409
    assert "PROCESSING" in too_late.json()["message"]
    assert unknown.status_code == 404
    assert not_an_id.status_code in (400, 404)
    assert [e.status for e in await store.history(first["orderId"])] == ["PLACED", "CANCELLED"]
    events = await read_topic(test_env["KAFKA_BOOTSTRAP_SERVERS"], test_env["KAFKA_ORDERS_TOPIC"], 3)
    assert [(key, event["type"]) for key, event in events if key == first["orderId"]] == [
        (first["orderId"], "order.placed"),
        (first["orderId"], "order.cancelled"),
    ]


@pytest.mark.kafka
async def test_a_503_never_becomes_an_order_even_when_kafka_takes_it_later(
    api: Client, infra: Infra, test_env: dict[str, str], real: dict[str, object], store: OrderStore
) -> None:
    async with api(**real, kafka_send_timeout_ms=500) as client:
        assert (await client.post("/api/orders", json=GOOD)).status_code == 202  # connected
        infra.kafka.signal(signal.SIGSTOP)  # Kafka hangs with the producer's batches in flight
        try:
            responses = await asyncio.gather(
                *(client.post("/api/orders", json={**GOOD, "userId": 2}) for _ in range(5))
            )
        finally:
            infra.kafka.signal(signal.SIGCONT)
        assert {r.status_code for r in responses} == {503}
        # The producer still holds those events and delivers them once Kafka answers again.
        events = await read_topic(test_env["KAFKA_BOOTSTRAP_SERVERS"], test_env["KAFKA_ORDERS_TOPIC"], 6)
    late = [OrderPlacedEvent.model_validate(event) for _, event in events if event["data"]["userId"] == 2]
    assert len(late) == 5
    for event in late:  # what the processor does with each
        result = await store.create(event.data.to_order(), event.id)
        assert result.abandoned
    assert await store.count(partial(store.keys.by_user, 2)) == 0


@pytest.mark.kafka
async def test_a_batch_is_placed_whole_in_one_transaction(
    api: Client, test_env: dict[str, str], real: dict[str, object], store: OrderStore
) -> None:
    orders = [{**GOOD, "userId": n, "quantity": n} for n in range(1, 1001)]
    async with api(**real) as client:
        placed = await client.post("/api/orders/batch", json={"orders": orders})
        one_bad = await client.post("/api/orders/batch", json={"orders": [*orders[:5], {**GOOD, "price": 0}]})
        too_many = await client.post("/api/orders/batch", json={"orders": [GOOD] * 1001})
        empty = await client.post("/api/orders/batch", json={"orders": []})
        huge = await client.post(
            "/api/orders/batch", json={"orders": [{**GOOD, "productName": "x" * 200}] * 5000}
        )
    assert placed.status_code == 202, placed.text
    data = placed.json()["data"]
    assert [o["userId"] for o in data] == list(range(1, 1001))
    assert len({o["orderId"] for o in data}) == 1000
    assert one_bad.status_code == 400
    assert [e["field"] for e in one_bad.json()["errors"]] == ["orders.5.price"]
    assert too_many.status_code == 400
    assert empty.status_code == 400
    assert huge.status_code == 413
    events = await read_topic(test_env["KAFKA_BOOTSTRAP_SERVERS"], test_env["KAFKA_ORDERS_TOPIC"], 1000)
    assert {key for key, _ in events} == {o["orderId"] for o in data}, "each keyed by its own orderId"
    assert await store.count(store.keys.all_orders) == 1000


@pytest.mark.kafka
async def test_a_batch_kafka_does_not_commit_in_time_is_never_seen(
    api: Client, infra: Infra, test_env: dict[str, str], real: dict[str, object], store: OrderStore
) -> None:
    async with api(**real, kafka_send_timeout_ms=1000) as client:
        first = await client.post("/api/orders/batch", json={"orders": [GOOD, GOOD]})
        assert first.status_code == 202  # connected, with a transaction done
        infra.kafka.signal(signal.SIGSTOP)
        try:
            refused = await client.post("/api/orders/batch", json={"orders": [{**GOOD, "userId": 2}] * 50})
        finally:
            infra.kafka.signal(signal.SIGCONT)
        assert refused.status_code == 503
        again = await client.post("/api/orders/batch", json={"orders": [{**GOOD, "userId": 3}] * 3})
        assert again.status_code == 202, again.text
    # A reader of committed records sees the two batches that were accepted, none of the other.
    records = await read_records(
        test_env["KAFKA_BOOTSTRAP_SERVERS"], test_env["KAFKA_ORDERS_TOPIC"], 5, committed_only=True
    )
    users = [json.loads(r.value or b"")["data"]["userId"] for r in records]
    assert sorted(users) == [1, 1, 3, 3, 3]
    assert await store.count(partial(store.keys.by_user, 2)) == 0
