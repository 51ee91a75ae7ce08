import json

import pytest

from orders_contract.events import (
    ORDER_CANCELLED,
    ORDER_PLACED,
    EventError,
    OrderCancelledEvent,
    OrderPlaced,
    OrderPlacedEvent,
    decode_event,
    encode_cancelled,
    encode_placed,
)
from orders_contract.models import Order, OrderCreate


def an_order() -> Order:
    body = b'{"userId": 7, "productName": "Desk", "quantity": 3, "price": 19.99}'
    return Order.place(OrderCreate.model_validate_json(body))


def test_placed_event_is_a_cloudevent_with_the_order() -> None:
    order = an_order()
    raw = encode_placed(order)
    envelope = json.loads(raw)
    assert envelope["specversion"] == "1.0"
    assert envelope["type"] == ORDER_PLACED
    assert envelope["subject"] == order.order_id
    assert envelope["datacontenttype"] == "application/json"
    assert {"id", "source", "time"} <= set(envelope)
    assert envelope["data"]["totalAmount"] == 59.97
    event = decode_event(raw)
    assert isinstance(event, OrderPlacedEvent)
    assert event.data.to_order() == order
    assert json.loads(encode_placed(order, "publication-1"))["id"] == "publication-1"


def test_the_fast_encoding_is_exactly_the_event_model() -> None:
    order = an_order()
    raw = json.loads(encode_placed(order, "e-1"))
    model = OrderPlacedEvent(
        id="e-1", time=raw["time"], subject=order.order_id, data=OrderPlaced(**order.model_dump())
    )
    assert raw == json.loads(model.model_dump_json(exclude_none=True))
    assert list(raw) == list(json.loads(model.model_dump_json(exclude_none=True)))


def test_cancelled_event_names_the_order_and_the_time() -> None:
    order = an_order()
    raw = encode_cancelled(order.order_id, "2026-11-25T12:00:00.000Z")
    envelope = json.loads(raw)
    assert (envelope["type"], envelope["subject"]) == (ORDER_CANCELLED, order.order_id)
    event = decode_event(raw)
    assert isinstance(event, OrderCancelledEvent)
    assert event.data.cancelled_at == "2026-11-25T12:00:00.000Z"
    with pytest.raises(EventError, match="subject"):
        decode_event(json.dumps({**envelope, "subject": an_order().order_id}).encode())


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "empty"),
        (b"not json", "invalid event"),
        (b"[1, 2]", "invalid event"),
        (b'{"specversion": "1.0"}', "invalid event"),
    ],
)
def test_messages_that_can_never_be_processed_say_why(raw: bytes | None, reason: str) -> None:
    with pytest.raises(EventError, match=reason):
        decode_event(raw)


def test_unknown_event_type_and_mismatched_subject_are_rejected() -> None:
    envelope = json.loads(encode_placed(an_order()))
    with pytest.raises(EventError, match="type"):
        decode_event(json.dumps({**envelope, "type": "order.exploded"}).encode())
    with pytest.raises(EventError, match="subject"):
        decode_event(json.dumps({**envelope, "subject": "someone-else"}).encode())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("orderId", "zzz"),
        ("userId", 0),
        ("quantity", 5000),
        ("price", 0.001),
        ("productName", ""),
        ("totalAmount", 1.0),  # not price x quantity
    ],
)
def test_well_formed_events_with_impossible_values_are_rejected(field: str, value: object) -> None:
    envelope = json.loads(encode_placed(an_order()))
    envelope["data"][field] = value
    if field == "orderId":
        envelope["subject"] = value
    with pytest.raises(EventError, match="invalid event"):
        decode_event(json.dumps(envelope).encode())
