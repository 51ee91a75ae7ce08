"""The cluster profile: three Kafka brokers, a Redis Cluster of six, three processors and two
query instances (`make up KAFKA_BROKERS=3 REDIS_CLUSTER=1`, scaled out), every promise kept.

The module starts its own infra (`Infra(kafka_brokers=3, redis_cluster=True)`), stopped at
its end whatever happened. Orders arrive at a steady rate while a Redis master is SIGKILLed
(its replica takes over) and later started again (it rejoins as a replica): the ledger audit
finds every acknowledged order exactly once, with its history and its `orders.status`
events exactly once, the retries with an Idempotency-Key placed one order each, and a live
feed that resumes with `Last-Event-ID`, alternately on either query instance, saw every
acknowledged order reach its final status. Pages read through either query instance merge
the shards newest first.
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import orjson
import pytest

from orders_contract.settings import RedisSettings
from orders_readmodel.store import OrderStore
from orders_readmodel.stream import position_key, split_positions
from orders_stack import Infra, Stack
from orders_stack.ledger import Ledger, audit, place_orders, settle, until

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.redis, pytest.mark.timeout(420)]

COUNT = 1500
RATE = 150.0
FINAL = {"COMPLETED", "CANCELLED", "FAILED"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    with Infra(
        tmp_path_factory.mktemp("profile"),
        kafka_port=0,
        redis_port=0,
        kafka_brokers=3,
        kafka_heap="384m",
        redis_cluster=True,
    ) as running:
        yield running


@contextlib.asynccontextmanager
async def _scaled(cluster: Infra, unique: str) -> AsyncIterator[tuple[Stack, list[str]]]:
    """The stack with three processors and two query instances; yields it and the query URLs."""
    env = {
        "KAFKA_ORDERS_TOPIC": f"orders-{unique}",
        "KAFKA_DLQ_TOPIC": f"orders-{unique}.dlq",
        "KAFKA_STATUS_TOPIC": f"orders-{unique}.status",
        "KAFKA_CONSUMER_GROUP": f"processor-{unique}",
        "REDIS_KEY_PREFIX": f"profile:{unique}:",
        "PROCESSING_DELAY_MS": "200",
        "KAFKA_SEND_TIMEOUT_MS": "5000",
        "BIND_HOST": "127.0.0.1",
    }
    with Stack(
        cluster, api_port=0, query_port=0, processor_port=0, env=env, processors=3, query_instances=2
    ) as stack:
        yield stack, stack.query_urls


class Feed:
    """A client of the live feed that resumes with Last-Event-ID, on the next query instance
    each time its stream ends (or is cut), as a browser behind a load balancer would."""

    def __init__(self, urls: list[str], shards: int) -> None:
        self.urls, self.shards = urls, shards
        self.final: dict[str, str] = {}
        self.last: str | None = None
        self.resumed = 0
        self.backwards: list[tuple[str, str]] = []

    def _advance(self, event_id: str) -> None:
        if self.last is not None:
            before = [position_key(p) for p in split_positions(self.last, self.shards)]
            after = [position_key(p) for p in split_positions(event_id, self.shards)]
            if any(a < b for a, b in zip(after, before, strict=True)):
                self.backwards.append((self.last, event_id))
        self.last = event_id

    async def run(self, stopping: asyncio.Event, opened: asyncio.Event) -> None:
        n = 0
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=15)) as http:
            while not stopping.is_set():
                url = self.urls[n % len(self.urls)]
                n += 1
                headers = {"Last-Event-ID": self.last} if self.last else {}
                try:
                    async with http.stream("GET", f"{url}/api/orders/events", headers=headers) as answer:
                        if answer.status_code != 200:
                            await asyncio.sleep(0.5)
                            continue
                        opened.set()
                        await self._read(answer, stopping)
                except httpx.HTTPError:
                    await asyncio.sleep(0.5)
                self.resumed += 1

    async def _read(self, answer: httpx.Response, stopping: asyncio.Event) -> None:
        event_id = name = None
        started = time.monotonic()
        async for line in answer.aiter_lines():
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name in FINAL:
                self.final[orjson.loads(line[6:])["orderId"]] = name
            elif not line:
                if event_id:
                    self._advance(event_id)
                event_id = name = None
                # Hop to the other instance now and then: resuming is what is tested.
                if stopping.is_set() or time.monotonic() - started > 4:
                    return


async def test_cluster_profile_survives_a_redis_master_killed_mid_load(cluster: Infra, unique: str) -> None:
    assert cluster.redis_env["REDIS_CLUSTER"] == "1"
    shards = int(cluster.redis_env["REDIS_SHARDS"])
    settings = RedisSettings(
        redis_url=cluster.redis_url,
        redis_cluster=True,
        redis_shards=shards,
        redis_key_prefix=f"profile:{unique}:",
    )
    store = OrderStore.connect(settings, timeout=5)
    stopping, opened = asyncio.Event(), asyncio.Event()
    load: asyncio.Task[Ledger] | None = None
    feed_task: asyncio.Task[None] | None = None
    try:
        async with _scaled(cluster, unique) as (stack, queries):
            feed = Feed(queries, shards)
            feed_task = asyncio.create_task(feed.run(stopping, opened))
            await asyncio.wait_for(opened.wait(), 30)
            ledger = Ledger()
            load = asyncio.create_task(
                place_orders(stack.api_url, COUNT, rate=RATE, cancel_every=10, ledger=ledger)
            )
            await until(ledger, COUNT // 3)
            victim = cluster.redis_masters()[0]
            killed = time.monotonic()
            await asyncio.to_thread(cluster.kill_redis_node, victim)
            async with asyncio.timeout(60):
                while victim in cluster.redis_masters() or len(cluster.redis_masters()) < 3:
                    await asyncio.sleep(0.2)
            print(f"redis failover: a replica took over {time.monotonic() - killed:.1f}s after SIGKILL")
            await asyncio.sleep(5)
            await asyncio.to_thread(cluster.start_redis_node, victim)
            ledger = await load
            await settle(store, ledger)
            result = await audit(
                store,
                ledger,
                cluster.kafka_bootstrap,
                f"orders-{unique}",
                status_topic=f"orders-{unique}.status",
            )
            assert not result.problems, result.problems
            assert len(ledger.acked) == COUNT - ledger.gave_up
            assert result.in_model == len(ledger.acked)
            assert set(ledger.answers) <= {200, 202, 409, 404, 503}, ledger.answers
            print(f"answers {dict(ledger.answers)}; acked {len(ledger.acked)}, gave up {ledger.gave_up}")

            async with asyncio.timeout(60):  # the feed catches up with the read model
                while set(ledger.acked) - set(feed.final):
                    await asyncio.sleep(0.5)
            assert {i: feed.final[i] for i in ledger.acked} == {
                i: str(ledger.expected(i)) for i in ledger.acked
            }
            assert not feed.backwards, feed.backwards[:3]
            assert feed.resumed > 3
            print(f"live feed: resumed {feed.resumed} times over both query instances")

            # Pages through either query instance: every shard's orders, newest first.
            wanted = await store.ids(store.keys.all_orders)
            for url in queries:
                seen: list[str] = []
                cursor = None
                async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                    while True:
                        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
                        body = (await http.get("/api/orders", params=params)).json()
                        seen += [o["orderId"] for o in body["data"]]
                        cursor = body["page"]["nextCursor"]
                        if not cursor:
                            break
                assert seen == wanted
    finally:
        stopping.set()
        for task in (load, feed_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        await store.redis.aclose()
