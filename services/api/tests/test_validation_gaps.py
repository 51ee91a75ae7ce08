"""Issue 12, item 6: names with nothing visible, bidirectional controls, prices written with
more than two decimals, and duplicate JSON keys are refused (400) by POST /api/orders and
/batch. Served without Kafka: a refused body never reaches it."""

import json
from typing import Any

import httpx
import pytest

from orders_contract.models import OrderCreate

from .test_ingest import GOOD, Client, api, nowhere

__all__ = ["api"]  # the fixture, imported for the tests below

INVISIBLE_NAMES = [
    "\u200b",  # zero width space
    "\u200d",  # zero width joiner
    "\u2060",  # word joiner
    "\u3164",  # Hangul filler
    "\u115f\u1160",  # Hangul choseong and jungseong fillers
    "\uffa0",  # halfwidth Hangul filler
    "\u0301",  # a lone combining mark
    "\u200b \u200d\u00a0\u2060",  # mixed with spaces
    "\u200f",  # a right-to-left mark alone
]
BIDI_NAMES = ["\u202eTESTING", "abc\u202adef", "x\u2066y\u2069", "\u202d1\u202c"]


def _raw(price: str = "1299.99", quantity: str = "2") -> bytes:
    return (
        f'{{"userId": 1, "productName": "Gaming Laptop", "quantity": {quantity}, "price": {price}}}'
    ).encode()


async def _post(client: httpx.AsyncClient, path: str, raw: bytes) -> tuple[int, dict[str, Any]]:
    response = await client.post(path, content=raw, headers={"Content-Type": "application/json"})
    return response.status_code, response.json()


@pytest.mark.parametrize("name", INVISIBLE_NAMES + BIDI_NAMES)
async def test_names_without_visible_characters_or_with_bidi_controls_get_400(api: Client, name: str) -> None:
    body = json.dumps({**GOOD, "productName": name}).encode()
    batch = json.dumps({"orders": [GOOD, {**GOOD, "productName": name}]}).encode()
    async with api(**nowhere()) as client:
        status, payload = await _post(client, "/api/orders", body)
        batch_status, batch_payload = await _post(client, "/api/orders/batch", batch)
    assert status == 400
    assert [e["field"] for e in payload["errors"]] == ["productName"]
    assert batch_status == 400
    assert [e["field"] for e in batch_payload["errors"]] == ["orders.1.productName"]


@pytest.mark.parametrize(
    "name", ["e\u0301", "\u05e9\u05dc\u05d5\u05dd\u200f", "\U0001f600" * 200, "a\u200db", "\u3164x"]
)
def test_visible_names_stay_valid(name: str) -> None:
    """A combining mark on a letter, a right-to-left mark next to Hebrew, 200 emoji (400 UTF-16
    units: the limit counts code points), a joiner or a filler beside a letter."""
    assert OrderCreate.model_validate({**GOOD, "productName": name}).product_name == name


@pytest.mark.parametrize("price", ["1.0000000000000001", "1299.991", "0.001", "1.001e0", "12.345"])
async def test_prices_written_with_more_than_two_decimals_get_400(api: Client, price: str) -> None:
    async with api(**nowhere()) as client:
        status, payload = await _post(client, "/api/orders", _raw(price))
        batch_status, _ = await _post(client, "/api/orders/batch", b'{"orders": [%s]}' % _raw(price))
    assert status == 400
    assert [e["field"] for e in payload["errors"]] == ["price"]
    assert batch_status == 400


@pytest.mark.parametrize(
    ("price", "value"), [("1e2", 100.0), ("100.00", 100.0), ("0.1", 0.1), ("1.000", 1.0), ("7", 7.0)]
)
def test_prices_with_at_most_two_decimals_stay_valid(price: str, value: float) -> None:
    from orders_contract.jsonbody import load_json_exact

    order = OrderCreate.model_validate(load_json_exact(_raw(price)))
    assert float(order.price) == value


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b'{"userId": 1, "productName": "x", "quantity": 1000000, "quantity": 1, "price": 1}', "quantity"),
        (
            b'{"orders": [{"userId": 1, "userId": 2, "productName": "x", "quantity": 1, "price": 1}]}',
            "userId",
        ),
        (
            b'{"orders": [], "orders": [{"userId": 1, "productName": "x", "quantity": 1, "price": 1}]}',
            "orders",
        ),
    ],
)
async def test_duplicate_keys_get_400_naming_the_key(api: Client, raw: bytes, key: str) -> None:
    path = "/api/orders/batch" if raw.startswith(b'{"orders"') else "/api/orders"
    async with api(**nowhere()) as client:
        status, payload = await _post(client, path, raw)
    assert status == 400
    assert [e["field"] for e in payload["errors"]] == ["body"]
    assert repr(key) in payload["errors"][0]["reason"]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"userId": 1, "productName": "a\\ud800", "quantity": 1, "price": 1}',
        b'{"a": 1}' + b" x",
        b"1" * 5000,
    ],
)
async def test_bodies_the_exact_parser_refuses_get_pydantics_400(api: Client, raw: bytes) -> None:
    async with api(**nowhere()) as client:
        status, payload = await _post(client, "/api/orders", raw)
    assert status == 400
    assert payload["errors"]
