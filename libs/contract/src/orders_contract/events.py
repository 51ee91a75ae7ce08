"""Kafka events: CloudEvents 1.0 JSON envelopes around the order data.

Every record we produce is in the CloudEvents Kafka protocol binding's structured mode: the
value is the JSON envelope and the `content-type` header says so (`CONTENT_TYPE_HEADER`, put
on every record by `orders_kafka.clients.record_headers`, the one place that builds them).

Versions: every event names its data's schema version in `dataschema`
(`urn:orders:event:<type>:v<n>`). Events published before versions existed carry none and
read as version 1. A change to a model that an old event no longer fits is a new version
(a new model, a new `dataschema`): tests/fixtures hold one event of every version we have
published, and each must still decode.
"""

from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import BaseModel, Field, TypeAdapter, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from orders_contract.models import (
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
    "CANCELLED_V1",
    "CONTENT_TYPE",
    "CONTENT_TYPE_HEADER",
    "EVENT_MODELS",
    "ORDER_CANCELLED",
    "ORDER_PLACED",
    "ORDER_STATUS_CHANGED",
    "PLACED_V1",
    "POSITION_HEADER",
    "STATUS_CHANGED_V1",
    "Event",
    "EventError",
    "OrderCancelled",
    "OrderCancelledEvent",
    "OrderPlaced",
    "OrderPlacedEvent",
    "OrderStatusChangedEvent",
    "StatusEventError",
    "decode_event",
    "decode_status_event",
    "encode_cancelled",
    "encode_placed",
    "encode_status_changed",
]

ORDER_PLACED: Final = "order.placed"
ORDER_CANCELLED: Final = "order.cancelled"
ORDER_STATUS_CHANGED: Final = "order.status.changed"
SOURCE = "/orders/api"
STATUS_SOURCE = "/orders/relay"

CONTENT_TYPE: Final = "application/cloudevents+json"
"""The `content-type` header of a structured-mode CloudEvent (CloudEvents Kafka binding)."""
CONTENT_TYPE_HEADER: Final = ("content-type", CONTENT_TYPE.encode())
"""That header as a Kafka record header (every record carries it: `kafka.record_headers`)."""
POSITION_HEADER: Final = "orders.position"
"""Header of `orders.status` records: the update-stream entry the event was published from."""


PLACED_V1: Final = "urn:orders:event:order.placed:v1"
CANCELLED_V1: Final = "urn:orders:event:order.cancelled:v1"
STATUS_CHANGED_V1: Final = "urn:orders:event:order.status.changed:v1"


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
    """Topic `orders`: the api accepted an order."""

    dataschema: Literal["urn:orders:event:order.placed:v1"] | None = Field(
        PLACED_V1, description="The data's schema version; absent (version 1) before versions existed."
    )
    type: Literal["order.placed"] = ORDER_PLACED
    data: OrderPlaced


class OrderCancelledEvent(_CloudEvent):
    """Topic `orders`: the api cancelled an order that was still PLACED."""

    dataschema: Literal["urn:orders:event:order.cancelled:v1"] | None = Field(
        CANCELLED_V1, description="The data's schema version; absent (version 1) before versions existed."
    )
    type: Literal["order.cancelled"] = ORDER_CANCELLED
    data: OrderCancelled


class OrderStatusChangedEvent(_CloudEvent):
    """Topic `orders.status`: one per transition, with the order as it is after it. `id` is
    `<orderId>:<version>`, `time` the transition's time; key: the order id."""

    source: str = STATUS_SOURCE
    dataschema: Literal["urn:orders:event:order.status.changed:v1"] = STATUS_CHANGED_V1
    type: Literal["order.status.changed"] = ORDER_STATUS_CHANGED
    data: Order


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
            "dataschema": PLACED_V1,
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
        raise EventError(f"invalid event: {_first_error(exc)}") from None
    if event.subject != event.data.order_id:
        raise EventError("invalid event: subject differs from data.orderId")
    return event


class StatusEventError(ValueError):
    """An `orders.status` value that is not a status event of a version we read."""


_STATUS_EVENT = TypeAdapter(OrderStatusChangedEvent)


def encode_status_changed(order: Order, at: str, trace: str | None = None) -> bytes:
    """The `orders.status` value for `order` as it is right after its transition at `at`;
    `trace`: the W3C traceparent of the span that made the transition, if traced."""
    event = OrderStatusChangedEvent(
        id=f"{order.order_id}:{order.version}",
        time=at,
        subject=order.order_id,
        data=order,
        traceparent=trace or None,
    )
    # The absent trace attributes are left out; `data` keeps its nulls (processedAt: null ...).
    return event.model_dump_json(exclude={"tracestate"} if trace else {"traceparent", "tracestate"}).encode()


def decode_status_event(raw: bytes | None) -> OrderStatusChangedEvent:
    """Parse an `orders.status` value; StatusEventError with the reason otherwise."""
    try:
        return _STATUS_EVENT.validate_json(raw or b"")
    except ValidationError as exc:
        raise StatusEventError(f"invalid status event: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "message"
    return f"{where}: {first['msg']}"


EVENT_MODELS: tuple[type[BaseModel], ...] = (OrderPlacedEvent, OrderCancelledEvent, OrderStatusChangedEvent)
"""Every event model we publish: each has its versions' fixtures and is a message of the AsyncAPI document."""
