"""The read API over a real Redis."""

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from orders_contract.models import Order
from orders_contract.models import OrderStatus as S
from orders_query.app import create_app
from orders_query.settings import Settings
from orders_readmodel.store import OrderStore
from orders_stack import free_port

pytestmark = pytest.mark.redis


async def _client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://query") as client,
    ):
        yield client


@pytest.fixture
async def client(test_env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(redis_url=test_env["REDIS_URL"], redis_key_prefix=test_env["REDIS_KEY_PREFIX"])
    async for c in _client(settings):
        yield c


@pytest.fixture
async def orders(store: OrderStore, new_order: Callable[..., Order]) -> list[Order]:
    """Five orders of user 5 (newest first): two COMPLETED, one PROCESSING, two PLACED."""
    placed = [new_order(user_id=5, name=f"item {i}") for i in range(5)]
    for order in placed:
        await store.create(order)
    for order in placed[:3]:
        await store.transition(order.order_id, S.PROCESSING)
    for order in placed[:2]:
        await store.transition(order.order_id, S.COMPLETED)
    return placed[::-1]


async def test_one_order(client: httpx.AsyncClient, orders: list[Order]) -> None:
    response = await client.get(f"/api/orders/{orders[-1].order_id}")
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["data"]["status"] == "COMPLETED"
    assert body["data"]["version"] == 3
    assert body["data"]["productName"] == "item 0"


async def test_unknown_and_malformed_ids(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/orders/01939a4e-0000-7000-8000-000000000000")
    assert missing.status_code == 404
    assert missing.json()["success"] is False
    assert missing.json()["data"] is None
    for bad in ("not-a-uuid", "..%2F..%2Fetc%2Fpasswd", "' OR 1=1 --", "%00"):
        assert (await client.get(f"/api/orders/{bad}")).status_code in (400, 404)


async def test_lists_by_user_and_status(client: httpx.AsyncClient, orders: list[Order]) -> None:
    by_user = (await client.get("/api/orders/user/5")).json()
    assert [o["orderId"] for o in by_user["data"]] == [o.order_id for o in orders]
    assert by_user["page"] == {"limit": 100, "nextCursor": None}
    completed = (await client.get("/api/orders/status/completed")).json()["data"]
    assert {o["orderId"] for o in completed} == {o.order_id for o in orders[-2:]}
    placed = (await client.get("/api/orders/status/Placed")).json()["data"]
    assert [o["status"] for o in placed] == ["PLACED", "PLACED"]
    everything = (await client.get("/api/orders")).json()["data"]
    assert [o["orderId"] for o in everything] == [o.order_id for o in orders]


async def test_pagination_with_cursor(client: httpx.AsyncClient, orders: list[Order]) -> None:
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = (await client.get("/api/orders/user/5", params=params)).json()
        seen += [o["orderId"] for o in body["data"]]
        cursor, pages = body["page"]["nextCursor"], pages + 1
        if cursor is None:
            break
    assert pages == 3
    assert seen == [o.order_id for o in orders]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/orders/status/SHIPPED", 400),
        ("/api/orders/user/0", 400),
        ("/api/orders/user/abc", 400),
        ("/api/orders?limit=0", 400),
        ("/api/orders?limit=-3", 400),
        ("/api/orders?limit=000", 400),
        ("/api/orders?limit=%C2%B2", 400),
        ("/api/orders?cursor=" + "x" * 65, 400),
        ("/api/orders?cursor=garbage!!", 400),
    ],
)
async def test_bad_parameters_get_400(client: httpx.AsyncClient, path: str, status: int) -> None:
    response = await client.get(path)
    assert response.status_code == status
    assert response.json()["success"] is False


async def test_page_size_is_capped(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/orders?limit=1000000")
    assert response.status_code == 200
    assert response.json()["page"]["limit"] == 1000
    enormous = await client.get("/api/orders?limit=" + "9" * 5000)  # beyond what int() parses
    assert enormous.status_code == 200
    assert enormous.json()["page"]["limit"] == 1000


async def test_ready_and_redis_down() -> None:
    gone = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async for client in _client(gone):
        order = await client.get("/api/orders/01939a4e-0000-7000-8000-000000000000")
        ready = await client.get("/health/ready")
        assert order.status_code == 503
        assert order.headers["Retry-After"] == "1"
        assert ready.status_code == 503


async def test_ready_with_redis(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json()["data"] == {"redis": "ok"}


async def test_a_status_list_leaves_out_an_order_that_moved_on_between_its_two_reads(
    client: httpx.AsyncClient, store: OrderStore, new_order: Callable[..., Order]
) -> None:
    """The page reads the index, then the orders: an order whose status changed in between
    (its hash says so before the index does, as seen here) is not listed under the old one."""
    staying, moving = new_order(), new_order()
    for order in (staying, moving):
        await store.create(order)
    await store.redis.hset(store.keys.order(moving.order_id), "status", S.PROCESSING.value)
    placed = (await client.get("/api/orders/status/PLACED")).json()
    assert [o["orderId"] for o in placed["data"]] == [staying.order_id]
    assert {o["status"] for o in placed["data"]} == {"PLACED"}
