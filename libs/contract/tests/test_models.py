import json
import time
import uuid
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from orders_contract.models import (
    MAX_PRICE,
    Order,
    OrderCreate,
    OrderStatus,
    new_order_id,
    order_json,
    total_amount,
)

VALID: dict[str, Any] = {"userId": 1, "productName": "Gaming Laptop", "quantity": 2, "price": 1299.99}


def parse(**changes: Any) -> OrderCreate:
    body = {**VALID, **changes}
    return OrderCreate.model_validate_json(json.dumps({k: v for k, v in body.items() if v is not ...}))


def failed_fields(**changes: Any) -> set[str]:
    with pytest.raises(ValidationError) as caught:
        parse(**changes)
    return {".".join(str(p) for p in e["loc"]) for e in caught.value.errors()}


def test_the_tutorials_example_is_valid() -> None:
    order = parse()
    assert (order.user_id, order.product_name, order.quantity) == (1, "Gaming Laptop", 2)
    assert order.price == Decimal("1299.99")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("userId", 0),
        ("userId", -5),
        ("userId", 2**63),
        ("quantity", 0),
        ("quantity", 1001),
        ("price", 0),
        ("price", 0.001),
        ("price", -1),
        ("price", 1e400),
        ("price", float(MAX_PRICE) * 10),
        ("productName", ""),
        ("productName", "x" * 201),
        ("productName", "   "),
        ("productName", "bad\x00name"),
        ("productName", "line\nbreak"),
    ],
)
def test_out_of_range_values_are_rejected(field: str, value: Any) -> None:
    assert failed_fields(**{field: value}) == {field}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("userId", "1"),
        ("userId", True),
        ("userId", 1.5),
        ("quantity", "2"),
        ("quantity", 2.0),
        ("quantity", None),
        ("productName", 42),
        ("productName", ["a"]),
        ("price", None),
        ("price", True),
        ("price", "12.50"),
        ("price", {"amount": 1}),
    ],
)
def test_wrong_types_are_rejected(field: str, value: Any) -> None:
    assert failed_fields(**{field: value}) == {field}


def test_boundaries_are_accepted() -> None:
    assert parse(quantity=1000, price=0.01, productName="x" * 200).quantity == 1000
    assert parse(productName="Café ☕ 東京").product_name == "Café ☕ 東京"
    assert parse(price=int(MAX_PRICE)).price == MAX_PRICE


def test_unknown_and_missing_fields_are_rejected() -> None:
    assert failed_fields(discount=5) == {"discount"}
    assert failed_fields(quantity=...) == {"quantity"}
    # snake_case names are Python's, not the wire's
    assert "user_id" in failed_fields(userId=..., user_id=1)


def test_malformed_json_is_rejected() -> None:
    for raw in (b"", b"{", b"[]", b"null", b'{"userId": 1,}'):
        with pytest.raises(ValidationError):
            OrderCreate.model_validate_json(raw)


@pytest.mark.parametrize(
    ("price", "quantity", "total"),
    [
        ("1299.99", 2, "2599.98"),
        ("0.10", 3, "0.30"),
        ("19.99", 3, "59.97"),
        ("1000000000", 1000, "1000000000000.00"),
    ],
)
def test_total_is_exact_decimal_arithmetic(price: str, quantity: int, total: str) -> None:
    assert total_amount(Decimal(price), quantity) == Decimal(total)


def test_an_order_goes_out_as_the_tutorials_camel_case_json() -> None:
    order = Order.place(parse(price=0.1, quantity=3))
    out = json.loads(order.model_dump_json())
    assert out["totalAmount"] == 0.3  # the exact decimal, as a JSON number
    assert out["status"] == "PLACED"
    assert out["version"] == 1
    assert set(out) >= {"orderId", "userId", "productName", "quantity", "price", "createdAt", "processedAt"}
    assert out["createdAt"].endswith("Z")
    assert len(out["createdAt"]) == len("2026-11-24T20:00:00.000Z")


def test_largest_amounts_stay_exact_as_json_numbers() -> None:
    order = Order.place(parse(price=999999999.99, quantity=1000))
    assert json.loads(order.model_dump_json())["totalAmount"] == 999999999990.00
    assert Decimal(str(json.loads(order.model_dump_json())["totalAmount"])) == order.total_amount


def test_order_ids_are_uuid7_and_sort_by_creation() -> None:
    ids = [new_order_id() for _ in range(200)]
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert all(str(uuid.UUID(i)) == i for i in ids), "the canonical text form"
    assert len(set(ids)) == 200
    assert ids == sorted(ids)  # strictly increasing within a process, even in one millisecond
    created_ms = uuid.UUID(ids[0]).int >> 80
    assert abs(created_ms - time.time() * 1000) < 60_000


def test_final_statuses() -> None:
    assert {s for s in OrderStatus if s.is_final} == {
        OrderStatus.COMPLETED,
        OrderStatus.CANCELLED,
        OrderStatus.FAILED,
    }


def test_order_json_reads_the_hash_text_as_the_model_would() -> None:
    """order_json is the fast read of a hash: the JSON form of each field follows the model's own
    serialization (no table of field types kept by hand)."""
    placed = Order.place(parse(price=999999999.99, quantity=1000))
    done = placed.model_copy(
        update={"status": OrderStatus.COMPLETED, "processed_at": "p", "completed_at": "c", "version": 3}
    )
    for order in (placed, done):
        text = {
            name: str(value) for name, value in order.model_dump(mode="json").items() if value is not None
        }
        assert order_json(text) == order.model_dump(mode="json")
        assert order_json(text) == Order.model_validate(text).model_dump(mode="json")
