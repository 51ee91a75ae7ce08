"""Fixtures for every test: real Kafka and Redis, started once per session when a test needs them.

Tests that use them carry the `kafka` or `redis` marker and get their own
topic, consumer group and Redis key prefix (a uuid), so they never see each
other's data. Everything started here is stopped at the end of the session,
also when tests fail (and, through PR_SET_PDEATHSIG, if pytest itself dies).
"""

import importlib
import os
import pkgutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import anyio
import pytest
from redis.asyncio import Redis

from orders_contract.keys import Keys
from orders_contract.models import Order, OrderCreate
from orders_readmodel.store import OrderStore
from orders_stack import Infra


def _import_anyio_now() -> None:
    """Import all of anyio here, in the main thread, before any test serves an app from a thread.

    anyio imports its modules lazily (on first use, e.g. `anyio.open_file` when Starlette sends a
    file), and pytest rewrites the modules of every package that ships a pytest plugin, anyio's
    among them: such an import in a server thread then parses source while the main thread may
    be parsing too, which CPython 3.11 does not survive ("SystemError: AST constructor recursion
    depth mismatch"; python/cpython#106905). Outside pytest nothing is rewritten."""
    for module in pkgutil.walk_packages(anyio.__path__, "anyio."):
        if module.name.startswith(("anyio._backends._trio", "anyio.pytest_plugin")):
            continue  # trio is not installed; the plugin is pytest's to load
        importlib.import_module(module.name)


_import_anyio_now()


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    """Kafka (KRaft) and Redis on free loopback ports, for the whole session; with
    TEST_PROFILE=cluster (`make test-cluster`, the end-to-end suite) three Kafka brokers and a
    Redis Cluster of six nodes, the cluster profile of `make up KAFKA_BROKERS=3 REDIS_CLUSTER=1`."""
    data_dir = Path(os.environ.get("TEST_DATA_DIR") or tmp_path_factory.mktemp("infra"))
    profile = os.environ.get("TEST_PROFILE") or "single"
    if profile not in ("single", "cluster"):
        raise pytest.UsageError(f"TEST_PROFILE is single or cluster, not {profile!r}")
    infra = Infra(data_dir, kafka_port=0, redis_port=0)
    if profile == "cluster":
        infra = Infra(
            data_dir, kafka_port=0, redis_port=0, kafka_brokers=3, kafka_heap="384m", redis_cluster=True
        )
    with infra as running:
        yield running


@pytest.fixture
def unique() -> str:
    """A fresh name part for this test's topic, group and key prefix."""
    return uuid.uuid4().hex[:12]


@pytest.fixture
def test_env(infra: Infra, unique: str) -> dict[str, str]:
    """The environment variables that point a service at this test's own slice of the infra."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
        "KAFKA_ORDERS_TOPIC": f"orders-{unique}",
        "KAFKA_DLQ_TOPIC": f"orders-{unique}.dlq",
        "KAFKA_STATUS_TOPIC": f"orders-{unique}.status",
        "KAFKA_CONSUMER_GROUP": f"processor-{unique}",
        "REDIS_URL": infra.redis_url,
        "REDIS_KEY_PREFIX": f"test:{unique}:",
        "BIND_HOST": "127.0.0.1",  # servers in tests listen on loopback only
    }


@pytest.fixture
async def redis_client(infra: Infra) -> AsyncIterator["Redis"]:
    client = Redis.from_url(infra.redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def store(redis_client: "Redis", test_env: dict[str, str]) -> OrderStore:
    """The read model under this test's own key prefix."""
    return OrderStore(redis_client, Keys(test_env["REDIS_KEY_PREFIX"]))


def make_order(
    user_id: int = 1, name: str = "Gaming Laptop", quantity: int = 2, price: str = "1299.99"
) -> Order:
    """A freshly placed, valid order."""
    body = f'{{"userId": {user_id}, "productName": "{name}", "quantity": {quantity}, "price": {price}}}'
    return Order.place(OrderCreate.model_validate_json(body))


@pytest.fixture
def new_order() -> Callable[..., Order]:
    """`new_order(user_id=...)` makes a freshly placed order."""
    return make_order
