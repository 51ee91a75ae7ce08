"""One generated client does everything: a Python client generated with openapi-python-client
(pinned in constraints.txt) from the committed front-door document runs the tutorial's flow
against a running stack, by the operations' own names: place an order, read it until it is
COMPLETED, then find it in the lists (all, by user, by status) and its history.

The generator runs offline (`--path`, no hooks). Until the gateway serves both services on one
origin, writes go through a client of the api's URL and reads through one of the query service's:
the same generated package, two base URLs.
"""

import contextlib
import importlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any
from uuid import UUID

import pytest

from .conftest import Urls

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FRONT_DOOR = ROOT / "docs" / "openapi" / "front-door.json"
PACKAGE = "orders_client"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The generated package, imported (from a folder of this test's own)."""
    folder = tmp_path_factory.mktemp("client")
    config = folder / "openapi-python-client.yaml"
    config.write_text("post_hooks: []\n")  # no formatter run: nothing but the generator itself
    subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(FRONT_DOOR),
            "--output-path",
            str(folder / PACKAGE),
            "--meta",
            "none",
            "--config",
            str(config),
            "--fail-on-warning",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(folder))
        for name in [name for name in sys.modules if name == PACKAGE or name.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


OPERATIONS = (
    "place_order",
    "get_order",
    "list_orders",
    "list_user_orders",
    "list_orders_by_status",
    "get_order_history",
)
"""The operations the flow calls: modules of the generated `api.orders` (the `orders` tag)."""


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{name}")


def _orders() -> SimpleNamespace:
    """`orders.place_order.sync(...)`, as the generated package's users write
    `from orders_client.api.orders import place_order`."""
    return SimpleNamespace(**{name: _module(f"api.orders.{name}") for name in OPERATIONS})


def test_the_tutorial_flow_through_the_generated_client(generated: Any, urls: Urls, user_id: int) -> None:
    """One client for the whole front door: through the gateway when the stack has one (writes reach
    the api, reads the query service), else straight to each service."""
    orders = _orders()
    models = _module("models")
    writes = generated.Client(base_url=urls.gateway or urls.api, timeout=30, raise_on_unexpected_status=True)
    reads = writes if urls.gateway else generated.Client(base_url=urls.query, timeout=30)
    with contextlib.ExitStack() as clients:
        for client in {id(writes): writes, id(reads): reads}.values():
            clients.enter_context(client)
        body = models.OrderCreate(user_id=user_id, product_name="Gaming Laptop", quantity=2, price=1299.99)
        placed = orders.place_order.sync_detailed(client=writes, body=body)
        assert placed.status_code == 202, placed.content
        assert placed.headers["location"].endswith(f"/api/orders/{placed.parsed.data.order_id}")
        order = placed.parsed.data
        assert isinstance(order, models.Order)
        assert order.status is models.OrderStatus.PLACED
        assert (order.user_id, order.quantity, order.total_amount) == (user_id, 2, 2599.98)
        order_id = UUID(order.order_id)

        deadline = time.monotonic() + 30
        while True:
            found = orders.get_order.sync(order_id, client=reads)
            assert isinstance(found, models.EnvelopeOrder), found
            if found.data.status is models.OrderStatus.COMPLETED or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert found.data.status is models.OrderStatus.COMPLETED
        assert found.success is True
        assert found.data.version == 3

        everyone = orders.list_orders.sync(client=reads, limit=1000)
        assert isinstance(everyone, models.ListEnvelopeOrder), everyone
        assert order.order_id in [o.order_id for o in everyone.data]

        mine = orders.list_user_orders.sync(user_id, client=reads)
        assert isinstance(mine, models.ListEnvelopeOrder), mine
        assert [o.order_id for o in mine.data] == [order.order_id]
        assert mine.page.next_cursor is None

        completed = orders.list_orders_by_status.sync("completed", client=reads, limit=1000)
        assert isinstance(completed, models.ListEnvelopeOrder), completed
        assert order.order_id in [o.order_id for o in completed.data]
        assert {o.status for o in completed.data} == {models.OrderStatus.COMPLETED}

        history = orders.get_order_history.sync(order_id, client=reads)
        assert isinstance(history, models.EnvelopelistHistoryEntry), history
        assert [entry.status for entry in history.data] == [
            models.OrderStatus.PLACED,
            models.OrderStatus.PROCESSING,
            models.OrderStatus.COMPLETED,
        ]


def test_the_generated_client_reads_the_errors_too(generated: Any, urls: Urls) -> None:
    orders = _orders()
    models = _module("models")
    with generated.Client(base_url=urls.query, timeout=30) as reads:
        missing = orders.get_order.sync_detailed(UUID(int=7), client=reads)
        assert missing.status_code == 404
        assert isinstance(missing.parsed, models.ErrorEnvelope)
        assert missing.parsed.success is False
        unknown = orders.list_orders_by_status.sync_detailed("SHIPPED", client=reads)
        assert unknown.status_code == 400
        assert isinstance(unknown.parsed, models.ErrorEnvelope)
