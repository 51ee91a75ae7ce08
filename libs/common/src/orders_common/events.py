"""Kafka events: CloudEvents 1.0 JSON envelopes around the order data."""

from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import Field, TypeAdapter, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from .models import (
    Amount,
    Money,
    Order,
    OrderId,
    OrderStatus,
    Quantity,
    RecordedProductName,
    UserId,
    WireModel,
    new_order_id,
    total_amount,
    utc_now,
)

__all__ = [
    "ORDER_CANCELLED",
    "ORDER_PLACED",
    "Event",
    "EventError",
    "OrderCancelled",
    "OrderCancelledEvent",
    "OrderPlaced",
    "OrderPlacedEvent",
    "decode_event",
    "encode_cancelled",
    "encode_placed",
]

ORDER_PLACED: Final = "order.placed"
ORDER_CANCELLED: Final = "order.cancelled"
SOURCE = "/orders/api"


class EventError(ValueError):
    """A Kafka message that can never be processed; the reason goes to the DLQ."""


class OrderPlaced(WireModel):
    """The data of an `order.placed` event: the order as it was accepted."""

    order_id: OrderId
    user_id: UserId
    product_name: RecordedProductName
    quantity: Quantity
    price: Money
    total_amount: Amount
    created_at: str

    @model_validator(mode="after")
    def _total_is_price_times_quantity(self) -> "OrderPlaced":
        if self.total_amount != total_amount(self.price, self.quantity):
            raise ValueError("totalAmount is not price x quantity")
        return self

    def to_order(self) -> Order:
        return Order(**self.model_dump(), status=OrderStatus.PLACED, version=1)


class OrderCancelled(WireModel):
    """The data of an `order.cancelled` event: the api moved a PLACED order to CANCELLED."""

    order_id: OrderId
    cancelled_at: str


class _CloudEvent(WireModel):
    """A CloudEvents 1.0 structured-mode envelope (the attribute names are all lower case)."""

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=new_order_id)
    source: str = SOURCE
    time: str = Field(default_factory=utc_now)
    subject: str
    datacontenttype: Literal["application/json"] = "application/json"
    traceparent: str | None = None
    """The distributed tracing extension: the W3C trace context of the publishing span."""
    tracestate: str | None = None


class OrderPlacedEvent(_CloudEvent):
    type: Literal["order.placed"] = ORDER_PLACED
    data: OrderPlaced


class OrderCancelledEvent(_CloudEvent):
    type: Literal["order.cancelled"] = ORDER_CANCELLED
    data: OrderCancelled


Event = Annotated[OrderPlacedEvent | OrderCancelledEvent, Field(discriminator="type")]
_EVENT: TypeAdapter[OrderPlacedEvent | OrderCancelledEvent] = TypeAdapter(Event)


_PLACED_FIELDS = tuple(to_camel(name) for name in OrderPlaced.model_fields)


def encode_placed(
    order: Order,
    event_id: str | None = None,
    data: dict[str, Any] | None = None,
    trace: dict[str, str] | None = None,
) -> bytes:
    """The Kafka value announcing a newly accepted order. `event_id` names this publication;
    `data` is `order.model_dump(mode="json")` when the caller has it already; `trace` the
    distributed tracing extension attributes (tracing.trace_fields()), if any.

    Written straight to JSON (on the api's hot path); the tests hold it to `OrderPlacedEvent`.
    """
    data = order.model_dump(mode="json") if data is None else data
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": event_id or new_order_id(),
            "source": SOURCE,
            "time": utc_now(),
            "subject": order.order_id,
            "datacontenttype": "application/json",
            "type": ORDER_PLACED,
            "data": {name: data[name] for name in _PLACED_FIELDS},
            **(trace or {}),
        }
    )


def encode_cancelled(order_id: str, cancelled_at: str, trace: dict[str, str] | None = None) -> bytes:
    """The Kafka value recording that the api cancelled a PLACED order (`trace`: as
    `encode_placed`'s)."""
    data = OrderCancelled(order_id=order_id, cancelled_at=cancelled_at)
    event = OrderCancelledEvent(subject=order_id, data=data, **(trace or {}))
    return event.model_dump_json(exclude_none=True).encode()


def decode_event(raw: bytes | None) -> OrderPlacedEvent | OrderCancelledEvent:
    """Parse a Kafka value; raises EventError with the reason when it can never be processed."""
    if raw is None:
        raise EventError("empty message")
    try:
        event = _EVENT.validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "message"
        raise EventError(f"invalid event: {where}: {first['msg']}") from None
    if event.subject != event.data.order_id:
        raise EventError("invalid event: subject differs from data.orderId")
    return event
