"""Drive orders through a running stack and prove what became of each one.

The fault suite's instrument: `place_orders` plays many shop clients at a
steady rate. Each client behaves as a careful one should: it sends an
`Idempotency-Key`, retries a 503 with the same key after `Retry-After`, and
cancels some orders right after placing them. The `Ledger` records every
answer. `audit` then compares the ledger with the read model and the topic:
every acknowledged order reached its final status exactly once, with its
history in order and without repeats; nothing unacknowledged exists; and a
read_committed consumer of the status topic sees each (order id, version)
exactly once, in order per order.
"""

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import cast

import httpx
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError

from orders_contract.models import OrderStatus
from orders_readmodel.store import OrderStore

__all__ = [
    "Audit",
    "Ledger",
    "audit",
    "compare_read_models",
    "place_orders",
    "read_records",
    "redis_full",
    "settle",
    "status_events",
    "until",
]

EXPECTED_HISTORY = {
    OrderStatus.COMPLETED: [OrderStatus.PLACED, OrderStatus.PROCESSING, OrderStatus.COMPLETED],
    OrderStatus.CANCELLED: [OrderStatus.PLACED, OrderStatus.CANCELLED],
}


@dataclass
class Ledger:
    """Every answer the clients got."""

    acked: dict[str, str] = field(default_factory=dict)
    """orderId -> Idempotency-Key, for every order answered 2xx."""
    cancelled: set[str] = field(default_factory=set)
    """Orders whose cancel was answered 200: they must end CANCELLED."""
    not_cancelled: set[str] = field(default_factory=set)
    """Orders whose cancel was answered 409: they must end COMPLETED."""
    gave_up: int = 0
    """Orders still refused (503) after every retry: they must not exist."""
    answers: Counter[int] = field(default_factory=Counter)
    """How many answers of each HTTP status, retries included."""
    transport_errors: int = 0

    def expected(self, order_id: str) -> OrderStatus:
        return OrderStatus.CANCELLED if order_id in self.cancelled else OrderStatus.COMPLETED


async def place_orders(
    api_url: str,
    count: int,
    *,
    rate: float = 400,
    concurrency: int = 64,
    cancel_every: int = 0,
    retries: int = 30,
    ledger: Ledger | None = None,
    user_ids: Callable[[int], int] = lambda n: n % 97 + 1,
    headers: Mapping[str, str] | None = None,
) -> Ledger:
    """Place `count` orders at about `rate` a second; cancel every `cancel_every`-th one at once.
    `headers` go with every request (an `Authorization`, say)."""
    ledger = ledger if ledger is not None else Ledger()
    numbers = iter(range(count))
    started = time.monotonic()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client(http: httpx.AsyncClient) -> None:
        for n in numbers:
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
            body = {"userId": user_ids(n), "productName": f"item {n}", "quantity": n % 5 + 1, "price": 9.99}
            key = uuid.uuid4().hex
            order_id = await place(http, body, key)
            if order_id and cancel_every and n % cancel_every == 0:
                await cancel(http, order_id)

    async def place(http: httpx.AsyncClient, body: dict[str, object], key: str) -> str | None:
        for _ in range(retries + 1):
            try:
                response = await http.post("/api/orders", json=body, headers={"Idempotency-Key": key})
            except httpx.TransportError:
                ledger.transport_errors += 1  # no answer: retry with the same key
                await asyncio.sleep(1)
                continue
            ledger.answers[response.status_code] += 1
            if response.status_code == 202:
                order_id: str = response.json()["data"]["orderId"]
                ledger.acked[order_id] = key
                return order_id
            if response.status_code != 503:
                raise AssertionError(f"POST answered {response.status_code}: {response.text}")
            await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
        ledger.gave_up += 1
        return None

    async def cancel(http: httpx.AsyncClient, order_id: str) -> None:
        for _ in range(retries + 1):
            try:
                response = await http.post(f"/api/orders/{order_id}/cancel")
            except httpx.TransportError:
                ledger.transport_errors += 1
                await asyncio.sleep(1)
                continue
            ledger.answers[response.status_code] += 1
            if response.status_code == 200:
                ledger.cancelled.add(order_id)
                return
            if response.status_code == 409:
                ledger.not_cancelled.add(order_id)
                return
            if response.status_code not in (404, 503):  # 404: not yet readable (Redis was down)
                raise AssertionError(f"cancel answered {response.status_code}: {response.text}")
            await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
        raise AssertionError(f"cancel of {order_id} never got an answer")

    # A task group: one client failing cancels the others before the connections close.
    async with (
        httpx.AsyncClient(base_url=api_url, timeout=60, limits=limits, headers=headers) as http,
        asyncio.TaskGroup() as clients,
    ):
        for _ in range(concurrency):
            clients.create_task(client(http))
    return ledger


@contextlib.asynccontextmanager
async def redis_full(redis: "Redis", filler_key: str, headroom: int = 1 << 20) -> AsyncIterator[None]:
    """Redis full while inside, as in production with `maxmemory-policy noeviction`: maxmemory
    just above the memory in use (`headroom` bytes), filled up by `filler_key`, so Redis
    refuses every write that may grow memory (OOM). On the way out the limit goes back to
    what it was and the filler is deleted."""
    before = cast(dict[str, str], await redis.config_get("maxmemory*"))
    try:
        await redis.config_set("maxmemory-policy", "noeviction")
        await redis.config_set("maxmemory", await _used_memory(redis) + headroom)
        # In small pieces: a command's own bytes count as used memory before it runs.
        chunk = "x" * (64 << 10)
        with contextlib.suppress(OutOfMemoryError):
            for _ in range(2 * headroom // len(chunk) + 1):
                await redis.rpush(filler_key, chunk)
        # Then the limit a little below the memory in use: buffers Redis frees meanwhile
        # (a client's query buffer, say) must not make room again.
        await redis.config_set("maxmemory", await _used_memory(redis) - 4 * len(chunk))
        yield
    finally:
        await redis.config_set("maxmemory", before["maxmemory"])
        await redis.config_set("maxmemory-policy", before["maxmemory-policy"])
        await redis.delete(filler_key)


async def _used_memory(redis: "Redis") -> int:
    return int((await redis.info("memory"))["used_memory"])


async def until(ledger: Ledger, acked: int, timeout: float = 120) -> None:
    """Wait until the clients have `acked` orders acknowledged (to inject a fault mid-load)."""
    async with asyncio.timeout(timeout):
        while len(ledger.acked) < acked:  # noqa: ASYNC110 - the clients update the ledger in place
            await asyncio.sleep(0.02)


async def settle(store: OrderStore, ledger: Ledger, timeout: float = 180) -> None:
    """Wait until every acknowledged order is in a final status (or the time is up)."""
    ids = list(ledger.acked)
    deadline = time.monotonic() + timeout
    while ids and time.monotonic() < deadline:
        async with store.redis.pipeline(transaction=False) as pipe:
            for order_id in ids:
                pipe.hget(store.keys.order(order_id), "status")
            statuses = await pipe.execute()
        ids = [i for i, s in zip(ids, statuses, strict=True) if s is None or not OrderStatus(s).is_final]
        if ids:
            await asyncio.sleep(0.2)


@dataclass
class Audit:
    """What the read model and the topic say, against the ledger. Empty lists mean all is well."""

    missing: list[str] = field(default_factory=list)
    """Acknowledged, but not in the read model."""
    phantoms: list[str] = field(default_factory=list)
    """In the read model, but never acknowledged."""
    wrong: list[str] = field(default_factory=list)
    """Wrong final status, or a history out of order or with repeats."""
    not_in_topic: list[str] = field(default_factory=list)
    """Acknowledged, but Kafka does not hold it."""
    status_wrong: list[str] = field(default_factory=list)
    """The status topic's events of an order: not each version once, in order, as in its history;
    or events of an order never acknowledged."""
    in_model: int = 0
    events: int = 0
    status_events: int = 0

    @property
    def problems(self) -> dict[str, list[str]]:
        found = {
            "missing": self.missing,
            "phantoms": self.phantoms,
            "wrong": self.wrong,
            "not_in_topic": self.not_in_topic,
            "status_wrong": self.status_wrong,
        }
        return {name: ids[:10] for name, ids in found.items() if ids}


async def audit(
    store: OrderStore,
    ledger: Ledger,
    bootstrap: str,
    topic: str,
    partitions: int = 6,
    status_topic: str | None = None,
) -> Audit:
    """`status_topic`: also check the status events (see `status_events`)."""
    result = Audit()
    in_model = set(await store.ids(store.keys.all_orders))
    result.in_model = len(in_model)
    result.missing = sorted(set(ledger.acked) - in_model)
    result.phantoms = sorted(in_model - set(ledger.acked))
    known = sorted(in_model & set(ledger.acked))
    for batch in (known[i : i + 500] for i in range(0, len(known), 500)):
        async with store.redis.pipeline(transaction=False) as pipe:
            for order_id in batch:
                pipe.hget(store.keys.order(order_id), "status")
                pipe.lrange(store.keys.history(order_id), 0, -1)
            replies = await pipe.execute()
        for order_id, status, history in zip(batch, replies[::2], replies[1::2], strict=True):
            entries = [json.loads(entry) for entry in history]
            expected = ledger.expected(order_id)
            times = [entry["at"] for entry in entries]
            if (
                status != expected
                or [entry["status"] for entry in entries] != EXPECTED_HISTORY[expected]
                or [entry["version"] for entry in entries] != list(range(1, len(entries) + 1))
                or times != sorted(times)
            ):
                result.wrong.append(f"{order_id}: {status}, {entries}")
    placed = await _placed_in_topic(bootstrap, topic, partitions)
    result.events = len(placed)
    result.not_in_topic = sorted(set(ledger.acked) - set(placed))
    if status_topic is not None:
        final = {order_id: ledger.expected(order_id) for order_id in ledger.acked}
        seen, unreadable = await status_events(bootstrap, status_topic, final)
        result.status_events = sum(map(len, seen.values()))
        result.status_wrong += unreadable
        for order_id in sorted(set(seen) | set(final)):
            events = seen.get(order_id, [])
            history = EXPECTED_HISTORY[final[order_id]] if order_id in final else []
            if events != list(enumerate(history, 1)):
                result.status_wrong.append(f"{order_id}: {events}")
    return result


async def status_events(
    bootstrap: str, topic: str, final: dict[str, OrderStatus], timeout: float = 120
) -> tuple[dict[str, list[tuple[int, OrderStatus]]], list[str]]:
    """Every order's (version, status) pairs as a read_committed consumer of the status topic
    sees them, in order, and the records that are no status event. Reads until each order of
    `final` has had its final status (the relay publishes a little after the read model
    changes), then to the end offsets of that moment."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    seen: dict[str, list[tuple[int, OrderStatus]]] = {}
    unreadable: list[str] = []
    waiting = set(final)
    await consumer.start()
    try:
        async with asyncio.timeout(timeout):
            end: dict[TopicPartition, int] | None = None
            while end is None or not await _reached(consumer, end):
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        event = _json(record.value)
                        data = event.get("data") if isinstance(event, dict) else None
                        if not isinstance(data, dict):
                            unreadable.append(f"not a status event: {record.partition}@{record.offset}")
                            continue
                        status = OrderStatus(data["status"])
                        seen.setdefault(str(data["orderId"]), []).append((int(data["version"]), status))
                        if final.get(data["orderId"]) == status:
                            waiting.discard(data["orderId"])
                if end is None and not waiting:
                    end = await consumer.end_offsets(list(consumer.assignment()))
    except TimeoutError:
        pass  # what was seen by then is the answer: the audit reports what is missing
    finally:
        await consumer.stop()
    return seen, unreadable


async def compare_read_models(original: OrderStore, other: OrderStore) -> list[str]:
    """How `other`'s read model differs from `original`'s: orders (their hashes), histories
    (times and stream positions included), and the indexes (all, by user, by status)."""
    differences: list[str] = []
    ids = [await store.ids(store.keys.all_orders) for store in (original, other)]
    if ids[0] != ids[1]:
        differences.append(
            f"orders: {len(ids[0])} against {len(ids[1])}, {sorted(set(ids[0]) ^ set(ids[1]))[:5]}"
        )
    users: set[str] = set()
    for batch in (ids[0][i : i + 500] for i in range(0, len(ids[0]), 500)):
        replies = []
        for store in (original, other):
            async with store.redis.pipeline(transaction=False) as pipe:
                for order_id in batch:
                    pipe.hgetall(store.keys.order(order_id))
                    pipe.lrange(store.keys.history(order_id), 0, -1)
                replies.append(await pipe.execute())
        for n, order_id in enumerate(batch):
            mine, theirs = replies[0][2 * n], replies[1][2 * n]
            if mine != theirs:
                differences.append(f"order {order_id}: {mine} against {theirs}")
            histories = [[json.loads(entry) for entry in reply[2 * n + 1]] for reply in replies]
            if histories[0] != histories[1]:
                differences.append(f"history of {order_id}: {histories[0]} against {histories[1]}")
            users.add(mine.get("userId", ""))
    a, b = original.keys, other.keys
    indexes = [(f"status {s}", partial(a.by_status, s), partial(b.by_status, s)) for s in OrderStatus]
    indexes += [
        (f"user {u}", partial(a.by_user, int(u)), partial(b.by_user, int(u))) for u in sorted(users) if u
    ]
    for name, mine_index, their_index in indexes:
        members = [set(await original.ids(mine_index)), set(await other.ids(their_index))]
        if members[0] != members[1]:
            differences.append(f"index {name}: {sorted(members[0] ^ members[1])[:5]}")
    return differences


async def read_records(
    bootstrap: str, topic: str, count: int, *, committed_only: bool = False, timeout: float = 60
) -> list[ConsumerRecord[bytes, bytes]]:
    """At least the first `count` records of a topic (all partitions), from its beginning."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed" if committed_only else "read_uncommitted",
    )
    await consumer.start()
    seen: list[ConsumerRecord[bytes, bytes]] = []
    try:
        async with asyncio.timeout(timeout):
            while len(seen) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    seen += records
    finally:
        await consumer.stop()
    return seen


async def _placed_in_topic(bootstrap: str, topic: str, count: int) -> list[str]:
    """The subjects of every `order.placed` event in the topic, from the start to its end now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    subjects: list[str] = []
    try:
        partitions = [TopicPartition(topic, p) for p in range(count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if end[tp] > 0}
        async with asyncio.timeout(120):
            while remaining:
                for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                    for record in records:
                        event = _json(record.value)
                        if isinstance(event, dict) and event.get("type") == "order.placed":
                            subjects.append(str(event.get("subject")))
                    if await consumer.position(tp) >= end[tp]:
                        remaining.discard(tp)
    finally:
        await consumer.stop()
    return subjects


async def _reached(consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> bool:
    return all([await consumer.position(tp) >= offset for tp, offset in end.items()])


def _json(value: bytes | None) -> object:
    """The JSON a record holds, or None (poison records are not JSON)."""
    try:
        return json.loads(value or b"null")
    except ValueError:
        return None
