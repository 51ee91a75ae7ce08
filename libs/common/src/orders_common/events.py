"""Kafka events: CloudEvents 1.0 JSON envelopes around the order data."""

from typing import Final, Literal

from pydantic import ValidationError, model_validator

from .models import (
    Amount,
    Money,
    Order,
    OrderId,
    OrderStatus,
    ProductName,
    Quantity,
    UserId,
    WireModel,
    new_order_id,
    total_amount,
    utc_now,
)

__all__ = [
    "ORDER_PLACED",
    "EventError",
    "OrderPlaced",
    "OrderPlacedEvent",
    "decode_event",
    "encode_placed",
]

ORDER_PLACED: Final = "order.placed"
SOURCE = "/orders/api"


class EventError(ValueError):
    """A Kafka message that can never be processed; the reason goes to the DLQ."""


class OrderPlaced(WireModel):
    """The data of an `order.placed` event: the order as it was accepted."""

    order_id: OrderId
    user_id: UserId
    product_name: ProductName
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


class OrderPlacedEvent(WireModel):
    """A CloudEvents 1.0 structured-mode envelope (the attribute names are all lower case)."""

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str = SOURCE
    type: Literal["order.placed"] = ORDER_PLACED
    time: str
    subject: str
    datacontenttype: Literal["application/json"] = "application/json"
    data: OrderPlaced


def encode_placed(order: Order) -> bytes:
    """The Kafka value announcing a newly accepted order."""
    event = OrderPlacedEvent(
        id=new_order_id(),
        time=utc_now(),
        subject=order.order_id,
        data=OrderPlaced(**order.model_dump(include=set(OrderPlaced.model_fields))),
    )
    return event.model_dump_json().encode()


def decode_event(raw: bytes | None) -> OrderPlacedEvent:
    """Parse a Kafka value; raises EventError with the reason when it can never be processed."""
    if raw is None:
        raise EventError("empty message")
    try:
        event = OrderPlacedEvent.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "message"
        raise EventError(f"invalid event: {where}: {first['msg']}") from None
    if event.subject != event.data.order_id:
        raise EventError("invalid event: subject differs from data.orderId")
    return event
