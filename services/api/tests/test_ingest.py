"""The ingest API: validation without Kafka, and publishing on a real Kafka."""

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from orders_api.app import create_app
from orders_api.settings import Settings
from orders_stack import free_port

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
    body = schema["paths"]["/api/orders"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["additionalProperties"] is False
    assert set(body["required"]) == {"userId", "productName", "quantity", "price"}


@pytest.mark.kafka
async def test_accepted_order_is_in_kafka_keyed_by_its_id(api: Client, test_env: dict[str, str]) -> None:
    topic = test_env["KAFKA_ORDERS_TOPIC"]
    async with api(
        kafka_bootstrap_servers=test_env["KAFKA_BOOTSTRAP_SERVERS"],
        kafka_orders_topic=topic,
        kafka_dlq_topic=test_env["KAFKA_DLQ_TOPIC"],
        query_public_url="http://query.example:8001",
    ) as client:
        assert (await client.get("/health/ready")).status_code == 200
        responses = await asyncio.gather(
            *(client.post("/api/orders", json={**GOOD, "userId": n}) for n in (1, 2, 3))
        )
    assert [r.status_code for r in responses] == [202, 202, 202]
    accepted = {r.json()["data"]["orderId"]: r for r in responses}
    for order_id, response in accepted.items():
        assert response.headers["Location"] == f"http://query.example:8001/api/orders/{order_id}"
        assert response.json()["data"]["status"] == "PLACED"

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=test_env["KAFKA_BOOTSTRAP_SERVERS"], auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        assert len(consumer.partitions_for_topic(topic) or ()) == 6
        seen: dict[str, Any] = {}
        async with asyncio.timeout(30):
            while len(seen) < 3:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        assert record.key is not None
                        assert record.value is not None
                        seen[record.key.decode()] = json.loads(record.value)
    finally:
        await consumer.stop()
    assert set(seen) == set(accepted)
    for order_id, event in seen.items():
        assert event["type"] == "order.placed"
        assert event["subject"] == order_id
        assert event["data"]["totalAmount"] == 2599.98
