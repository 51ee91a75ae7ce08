"""Wire models: what clients send and get back, in the tutorial's camelCase JSON."""

import os
import re
import time
import unicodedata
import uuid
from collections.abc import Callable, Mapping
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

__all__ = [
    "MAX_BATCH",
    "MAX_PAGE",
    "MAX_PRICE",
    "MAX_USER_ID",
    "Amount",
    "Envelope",
    "ErrorDetail",
    "ErrorEnvelope",
    "HistoryEntry",
    "ListEnvelope",
    "Money",
    "Order",
    "OrderBatch",
    "OrderCreate",
    "OrderId",
    "OrderStatus",
    "Page",
    "PageQuery",
    "ProductName",
    "Quantity",
    "RecordedProductName",
    "StreamTicket",
    "UserId",
    "new_order_id",
    "order_json",
    "total_amount",
    "utc_now",
]

CENT = Decimal("0.01")
MAX_PRICE = Decimal("1000000000")
"""Highest accepted price. With quantity <= 1000 every total stays below 2**53 cents,
so the JSON number a client reads is exactly the decimal we computed."""
MAX_USER_ID = 2**53 - 1
"""Largest integer a JavaScript client can hold exactly."""


class OrderStatus(StrEnum):
    PLACED = "PLACED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"

    @property
    def is_final(self) -> bool:
        return self in (OrderStatus.COMPLETED, OrderStatus.CANCELLED, OrderStatus.FAILED)


_second: tuple[int, str] = (-1, "")


def utc_now() -> str:
    """The current time as the tutorial writes it: ISO 8601, milliseconds, `Z`."""
    global _second
    ms = time.time_ns() // 1_000_000
    seconds = ms // 1000
    if _second[0] != seconds:  # formatting the date is the costly part: once a second
        _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{_second[1]}.{ms % 1000:03d}Z"


_last_stamp = 0


def new_order_id(shard: int | None = None, shards: int = 1) -> str:
    """A UUIDv7 whose text sorts by creation time, which the Redis indexes rely on.

    The 12 bits after the millisecond hold its sub-millisecond fraction, and
    ids made by one process strictly increase (RFC 9562, section 6.2, method 3).
    `shard` of `shards`: an id of that read-model shard (keys.shard_of: its last 32 bits
    modulo `shards`), for the orders of a batch, which must share one; the bits stay random.
    """
    global _last_stamp
    unix_ns = time.time_ns()
    stamp = (unix_ns // 1_000_000) << 12 | (unix_ns % 1_000_000) * 4096 // 1_000_000
    stamp = _last_stamp = max(stamp, _last_stamp + 1)
    rand = int.from_bytes(os.urandom(8), "big") & (2**62 - 1)
    if shard is not None and shards > 1:
        low = rand & 0xFFFFFFFF
        low += shard - low % shards
        if low > 0xFFFFFFFF:
            low -= shards
        rand = rand & ~0xFFFFFFFF | low
    value = (stamp >> 12) << 80 | 0x7 << 76 | (stamp & 0xFFF) << 64 | 0b10 << 62 | rand
    h = f"{value:032x}"  # str(uuid.UUID(int=value)), without building the UUID
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def total_amount(price: Decimal, quantity: int) -> Decimal:
    """price x quantity in exact decimal arithmetic, rounded half-up to cents."""
    return (price * quantity).quantize(CENT, rounding=ROUND_HALF_UP)


# Character classes written once, for Python's `re` and for JSON Schema (ECMA-262) alike.
_CONTROL = r"\x00-\x1f\x7f-\x9f"
_BIDI = r"\u202a-\u202e\u2066-\u2069"
"""Bidirectional embeddings, overrides and isolates: they reorder how the text around them
shows (a name shown reversed). The marks U+200E, U+200F and U+061C stay allowed: right-to-left
names need them and they reorder nothing, but they are not visible (see _printable)."""
_SPACE = r"\x20\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
PRINTABLE_PATTERN = rf"^[^{_CONTROL}{_BIDI}]*[^{_CONTROL}{_BIDI}{_SPACE}][^{_CONTROL}{_BIDI}]*$"
"""Text without control characters or bidirectional controls, and not whitespace alone. Looser
than `_printable`, which also wants a visible character: JSON Schema patterns have no Unicode
categories, so the schema may accept a name the API refuses, never the other way round."""
_HAS_CONTROL = re.compile(rf"[{_CONTROL}]")
_HAS_BIDI = re.compile(rf"[{_BIDI}]")
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Mn", "Mc", "Me", "Zs", "Zl", "Zp"})
"""Controls, format characters (zero-width, joiners, marks), combining marks and separators."""
_FILLERS = frozenset("\u115f\u1160\u2800\u3164\uffa0")
"""Letters that show as blank space: the Hangul fillers and the blank Braille pattern."""


def _visible(char: str) -> bool:
    return char not in _FILLERS and unicodedata.category(char) not in _INVISIBLE_CATEGORIES


def _printable(value: str) -> str:
    if _HAS_CONTROL.search(value):
        raise ValueError("must not contain control characters")
    if _HAS_BIDI.search(value):
        raise ValueError("must not contain bidirectional embeddings, overrides or isolates")
    if not any(map(_visible, value)):
        raise ValueError("must not be blank (no visible character)")
    return value


Amount = Annotated[
    Decimal,
    # A JSON number, as in the tutorial; exact because of MAX_PRICE.
    PlainSerializer(float, return_type=float, when_used="json"),
]
"""An exact decimal amount that goes out as a JSON number."""

Money = Annotated[Amount, Field(ge=CENT, le=MAX_PRICE, decimal_places=2, allow_inf_nan=False)]
"""An amount of money: exact decimal, at least 0.01, at most two decimals."""


def _json_number(value: object) -> Decimal:
    """A JSON number as an exact decimal; strings and booleans are not numbers.

    The direct routes (fastpath) parse bodies keeping every number's written
    decimals, so a price comes as the Decimal the client wrote, and 1.0000000000000001
    fails "at most two decimals" instead of passing as the float 1.0. A float (a body
    parsed by pydantic) is read by its shortest repr: the decimal the client wrote
    whenever it has at most 15 significant digits, as every valid price has.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError("must be a JSON number")
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def _canonical_uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValueError("must be a UUID") from None


# The tutorial's validation rules, one statement each, shared by requests and events.
UserId = Annotated[int, Field(ge=1, le=MAX_USER_ID, description="The customer placing the order.")]
ProductName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        description="1 to 200 characters (code points), with a visible character (not only spaces, "
        "zero-width or combining characters or fillers), no control characters, no bidirectional "
        "embeddings, overrides or isolates. The pattern cannot express 'visible' (JSON Schema has no "
        "Unicode categories), so the API refuses some names the pattern lets through.",
        json_schema_extra={"pattern": PRINTABLE_PATTERN},
    ),
    AfterValidator(_printable),
]
Quantity = Annotated[int, Field(ge=1, le=1000, description="1 to 1000 items.")]
OrderId = Annotated[str, AfterValidator(_canonical_uuid), Field(json_schema_extra={"format": "uuid"})]
RecordedProductName = Annotated[str, Field(min_length=1, max_length=200)]
"""A product name in an event the api already accepted: the api's rules may have been looser
when it did, and an accepted order must never be refused later (dead-lettered)."""


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=True,
        serialize_by_alias=True,
    )


class OrderCreate(WireModel):
    """The body of `POST /api/orders`, validated as the tutorial did."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        validate_by_name=False,
        json_schema_extra={
            "examples": [{"userId": 1, "productName": "Gaming Laptop", "quantity": 2, "price": 1299.99}]
        },
    )

    user_id: UserId
    product_name: ProductName
    quantity: Quantity
    price: Annotated[
        Money,
        BeforeValidator(_json_number),
        WithJsonSchema(
            {
                "type": "number",
                "minimum": float(CENT),
                "maximum": float(MAX_PRICE),
                "multipleOf": float(CENT),
                "description": "Unit price: a JSON number, 0.01 or more, at most two decimals.",
            }
        ),
    ]


MAX_BATCH = 1000
"""Most orders one `POST /api/orders/batch` may place."""


class OrderBatch(WireModel):
    """The body of `POST /api/orders/batch`: every order validated as a single one would be."""

    model_config = ConfigDict(strict=True, extra="forbid", validate_by_name=False)

    orders: list[OrderCreate] = Field(min_length=1, max_length=MAX_BATCH)


class Order(WireModel):
    """An order as clients read it."""

    order_id: str
    user_id: int
    product_name: str
    quantity: int
    price: Money
    total_amount: Amount
    status: OrderStatus
    created_at: str
    processed_at: str | None = None
    completed_at: str | None = None
    cancelled_at: str | None = None
    failed_at: str | None = None
    version: int = Field(ge=1, description="How many transitions the order has been through.")

    @classmethod
    def place(cls, request: OrderCreate, order_id: str | None = None) -> "Order":
        """A new order, accepted now, from a validated request (so not validated again);
        `order_id`: its id when the caller chose one (`new_order_id(shard, shards)`)."""
        return cls.model_construct(
            order_id=order_id or new_order_id(),
            user_id=request.user_id,
            product_name=request.product_name,
            quantity=request.quantity,
            price=request.price,
            total_amount=total_amount(request.price, request.quantity),
            status=OrderStatus.PLACED,
            created_at=utc_now(),
            version=1,
        )


_JSON_FIELDS = tuple(to_camel(name) for name in Order.model_fields)
_FROM_JSON_TYPE: dict[str, Callable[[str], Any]] = {
    "integer": int,
    # Exact: every amount has at most 15 significant digits (see MAX_PRICE).
    "number": float,
}
_FROM_TEXT: dict[str, Callable[[str], Any]] = {
    name: _FROM_JSON_TYPE[schema["type"]]
    for name, schema in Order.model_json_schema(mode="serialization")["properties"].items()
    if schema.get("type") in _FROM_JSON_TYPE
}
"""How each field that is not text in the JSON form is read back from the hash's text: by the
JSON type the model serializes it as (a new field of the model needs no entry here)."""


def order_json(fields: Mapping[str, str]) -> dict[str, Any]:
    """An order as the read model's hash holds it (text), in its JSON form: what
    `Order.model_validate(fields).model_dump(mode="json")` gives, without the cost.

    For the read paths; the store wrote those fields from a validated `Order`.
    """
    return {
        name: (convert(value) if (convert := _FROM_TEXT.get(name)) and value is not None else value)
        for name in _JSON_FIELDS
        for value in (fields.get(name),)
    }


class HistoryEntry(WireModel):
    """One transition of an order."""

    status: OrderStatus
    at: str
    version: int
    position: str | None = Field(
        None, description="The transition's entry in the update stream: a `Last-Event-ID` to resume from."
    )


class StreamTicket(WireModel):
    """A single-use ticket that opens one live stream (`?ticket=`), for clients that cannot
    send an `Authorization` header."""

    ticket: str
    expires_in: int = Field(description="Seconds left to open the stream with it.")


class ErrorDetail(BaseModel):
    field: str
    reason: str


MAX_PAGE = 1000
"""Most orders one page of a list carries."""


def _page_limit(value: object) -> object:
    """A page size from a query string: plain ASCII digits (no sign, space, point or
    underscore); any number of them, since more than MAX_PAGE reads as MAX_PAGE."""
    if not isinstance(value, str):
        return value
    if not (value.isascii() and value.isdigit()):
        raise ValueError("must be an integer written in digits")
    return MAX_PAGE if len(value.lstrip("0")) > len(str(MAX_PAGE)) else int(value)


class PageQuery(BaseModel):
    """`limit` and `cursor`: how every list is paged, one rule for all of them."""

    limit: Annotated[int, BeforeValidator(_page_limit)] = Field(
        100, ge=1, description=f"Orders per page, 100 by default; more than {MAX_PAGE} reads as {MAX_PAGE}."
    )
    cursor: str | None = Field(None, max_length=64, description="`page.nextCursor` of the previous page.")

    @property
    def size(self) -> int:
        """`limit`, capped at MAX_PAGE."""
        return min(self.limit, MAX_PAGE)


class Page(WireModel):
    limit: int
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


T = TypeVar("T")


class Envelope(WireModel, Generic[T]):
    """The tutorial's response envelope."""

    success: bool
    message: str
    data: T | None = None
    timestamp: str


class ListEnvelope(Envelope[list[T]], Generic[T]):
    page: Page


class ErrorEnvelope(Envelope[None]):
    errors: list[ErrorDetail] | None = None
