"""Records on every topic follow the CloudEvents Kafka protocol binding (structured mode), as the
CloudEvents SDK reads them; the api serves the event contract at /asyncapi.json."""

import asyncio
import json

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka_event

from orders_api.asyncapi import asyncapi_document
from orders_contract.events import CONTENT_TYPE, decode_status_event, encode_placed
from orders_contract.models import Order, OrderCreate
from orders_contract.settings import KafkaSettings
from orders_stack import Infra, Stack, free_port
from orders_stack.ledger import read_records

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


async def test_every_topic_holds_structured_cloudevents_and_the_contract_is_served(
    infra: Infra, test_env: dict[str, str]
) -> None:
    topics = {name: test_env[f"KAFKA_{name.upper()}_TOPIC"] for name in ("orders", "status", "dlq")}
    # The api alone first, so that the cancel surely finds its order still PLACED.
    stack = Stack(
        infra, api_port=free_port(), query_port=free_port(), processor_port=free_port(), env=test_env
    )
    try:
        stack.start_service("api")
        stack.wait_ready("api")
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as api:
            body = {"userId": 4, "productName": "Lamp", "quantity": 2, "price": 15.5}
            first = (await api.post("/api/orders", json=body)).json()["data"]["orderId"]
            second = (await api.post("/api/orders", json=body)).json()["data"]["orderId"]
            assert (await api.post(f"/api/orders/{second}/cancel")).status_code == 200
            contract = (await api.get("/asyncapi.json")).json()
        stack.start_service("processor")
        # A CloudEvent the processor cannot process: it goes to the dead-letter topic as it is.
        order = Order.place(
            OrderCreate.model_validate({"userId": 4, "productName": "x", "quantity": 1, "price": 1})
        )
        poison = json.dumps({**json.loads(encode_placed(order)), "type": "order.teleported"}).encode()
        producer = AIOKafkaProducer(bootstrap_servers=infra.kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(
                topics["orders"],
                poison,
                key=order.order_id.encode(),
                headers=[("content-type", CONTENT_TYPE.encode())],
            )
        finally:
            await producer.stop()
        bootstrap = infra.kafka_bootstrap
        orders, status, dead = await asyncio.gather(
            read_records(bootstrap, topics["orders"], 4, committed_only=True),
            read_records(bootstrap, topics["status"], 5, committed_only=True),
            read_records(bootstrap, topics["dlq"], 1, committed_only=True),
        )
    finally:
        stack.stop()
    types: dict[str, list[str]] = {}
    for record in [*orders, *status, *dead]:
        headers = dict(record.headers)
        assert headers["content-type"] == CONTENT_TYPE.encode(), record
        event = from_kafka_event(KafkaMessage(headers, record.key, record.value or b""))
        assert event.get_subject() == (record.key or b"").decode()
        types.setdefault(record.topic, []).append(event.get_type())
    assert sorted(types[topics["orders"]]) == [
        "order.cancelled",
        "order.placed",
        "order.placed",
        "order.teleported",
    ]
    assert types[topics["status"]] == ["order.status.changed"] * len(status)
    assert types[topics["dlq"]] == ["order.teleported"]
    final = {
        decode_status_event(r.value).data.order_id: decode_status_event(r.value).data.status for r in status
    }
    assert final == {first: "COMPLETED", second: "CANCELLED"}
    settings = KafkaSettings(
        kafka_orders_topic=topics["orders"],
        kafka_status_topic=topics["status"],
        kafka_dlq_topic=topics["dlq"],
    )
    assert contract == json.loads(json.dumps(asyncapi_document(settings)))
