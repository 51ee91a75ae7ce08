"""The query service on a full Redis (maxmemory reached, `noeviction`), real Redis: plain reads
are served, reads Redis refuses (those queued in MULTI) answer 503 with Retry-After, never
500, and readiness stays a PING (the query service writes nothing)."""

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from orders_contract.models import Order
from orders_query.app import create_app
from orders_query.settings import Settings
from orders_readmodel.store import OrderStore
from orders_stack.ledger import redis_full

pytestmark = pytest.mark.redis


@pytest.fixture
async def query(test_env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(redis_url=test_env["REDIS_URL"], redis_key_prefix=test_env["REDIS_KEY_PREFIX"]))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://query") as client:
            yield client


async def test_a_full_redis_gives_503_not_500(
    query: httpx.AsyncClient, store: OrderStore, new_order: Callable[..., Order]
) -> None:
    order = new_order()
    await store.create(order)
    async with redis_full(store.redis, store.keys.prefix + "filler"):
        one = await query.get(f"/api/orders/{order.order_id}")
        ready = await query.get("/health/ready")
        stats = await query.get("/api/orders/stats")
        events = await query.get(f"/api/orders/{order.order_id}/events")  # its snapshot: MULTI
    assert one.status_code == 200
    assert ready.status_code == 200
    assert stats.status_code in (200, 503), stats.text  # 200 once it reads outside MULTI
    assert events.status_code == 503, events.text
    assert events.headers["Retry-After"] == "1"
    assert events.json()["success"] is False
