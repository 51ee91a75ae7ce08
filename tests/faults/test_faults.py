"""The fault suite: thousands of orders through the real stack while something breaks.

Each test runs the api, processor(s) and query as processes on Kafka and Redis
of this module's own (so killing them disturbs no other test), drives orders
with clients that retry 503s with their Idempotency-Key and cancel some
orders, breaks something mid-load, and then audits (orders_stack.ledger):
every acknowledged order reached its final status exactly once with its
history in order, nothing unacknowledged exists, Kafka holds every
acknowledged order, and a read_committed consumer of the status topic sees
each (order id, version) exactly once, in order.
"""

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from functools import partial

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from orders_contract.events import encode_placed
from orders_contract.keys import Keys
from orders_contract.models import Order, OrderCreate
from orders_contract.settings import RedisSettings
from orders_readmodel.store import OrderStore
from orders_stack import Infra, Stack, free_port
from orders_stack.ledger import (
    Ledger,
    audit,
    compare_read_models,
    place_orders,
    read_records,
    redis_full,
    settle,
    until,
)
from orders_stack.metrics import metric_value
from orders_stack.oidc import Hydra, Provider

# Each test may restart Kafka (up to 2 min) and wait for its backlog: more than the default limit.
pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.redis, pytest.mark.timeout(600)]

COUNT = 2000
RATE = 400.0


@pytest.fixture(scope="module")
def own_infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    """Kafka and Redis for this module alone: its tests kill and restart them."""
    with Infra(tmp_path_factory.mktemp("faults"), kafka_port=0, redis_port=0) as running:
        yield running


@dataclass
class Rig:
    infra: Infra
    stack: Stack
    store: OrderStore
    env: dict[str, str]

    @property
    def topic(self) -> str:
        return self.env["KAFKA_ORDERS_TOPIC"]

    def add_processor(self, key: str) -> None:
        self.stack.start_service("processor", key, PROCESSOR_PORT=str(free_port()))
        self.stack.wait_ready(key)

    headers: dict[str, str] | None = None
    user_ids: Callable[[int], int] = lambda n: n % 97 + 1

    async def load(self, ledger: Ledger, count: int = COUNT, cancel_every: int = 10) -> Ledger:
        return await place_orders(
            self.stack.api_url,
            count,
            rate=RATE,
            cancel_every=cancel_every,
            ledger=ledger,
            headers=self.headers,
            user_ids=self.user_ids,
        )

    async def verify(self, ledger: Ledger, *, refusals_expected: bool = False) -> None:
        """The promise, checked against the read model and the topic."""
        await settle(self.store, ledger)
        result = await audit(
            self.store,
            ledger,
            self.infra.kafka_bootstrap,
            self.topic,
            status_topic=self.env["KAFKA_STATUS_TOPIC"],
        )
        assert not result.problems, result.problems
        assert len(ledger.acked) == COUNT - ledger.gave_up
        assert result.in_model == len(ledger.acked)
        assert set(ledger.answers) <= {200, 202, 409, 404, 503}, ledger.answers
        if refusals_expected:
            assert ledger.answers[503] > 0, "the fault was felt"
        # Nothing turns up late: a producer still holding an abandoned event delivers it
        # by now, and it must change nothing.
        await asyncio.sleep(2)
        assert await self.store.count(self.store.keys.all_orders) == result.in_model


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    """Ory Hydra, for the tests run in AUTH_MODE=oidc."""
    with Hydra(tmp_path_factory.mktemp("hydra"), public_port=0, admin_port=0) as running:
        yield running


@pytest.fixture(params=["none", "oidc"])
def auth_mode(request: pytest.FixtureRequest) -> str:
    """The fault tests that run in both modes: the guarantees do not depend on access control."""
    mode: str = request.param
    return mode


@pytest.fixture
async def rig(own_infra: Infra, unique: str, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    mode = request.getfixturevalue("auth_mode") if "auth_mode" in request.fixturenames else "none"
    env = {
        "KAFKA_ORDERS_TOPIC": f"orders-{unique}",
        "KAFKA_DLQ_TOPIC": f"orders-{unique}.dlq",
        "KAFKA_STATUS_TOPIC": f"orders-{unique}.status",
        "KAFKA_CONSUMER_GROUP": f"processor-{unique}",
        "REDIS_KEY_PREFIX": f"faults:{unique}:",
        "PROCESSING_DELAY_MS": "200",
        "KAFKA_SEND_TIMEOUT_MS": "2000",
        "PROCESSOR_DRAIN_TIMEOUT_MS": "10000",
        "BIND_HOST": "127.0.0.1",
    }
    headers, user_ids = None, Rig.user_ids
    if mode == "oidc":
        # One customer places every order and cancels its own: its token, its rate limit counted.
        provider: Provider = request.getfixturevalue("provider")
        env.update(provider.service_env, RATE_LIMIT_REQUESTS="100000")
        headers = {"Authorization": f"Bearer {provider.user_token(7)}"}
        user_ids = _user_7
    stack = Stack(own_infra, api_port=0, query_port=0, processor_port=0, env=env)
    store = OrderStore.connect(
        RedisSettings(redis_url=own_infra.redis_url, redis_key_prefix=env["REDIS_KEY_PREFIX"])
    )
    with stack:
        try:
            yield Rig(own_infra, stack, store, env, headers, user_ids)
        finally:
            await store.redis.aclose()


def _user_7(n: int) -> int:
    return 7


@pytest.mark.usefixtures("auth_mode")
async def test_processor_killed_mid_load_and_restarted(rig: Rig) -> None:
    """Also: `make rebuild`'s command rebuilds, from the status topic alone, a read model equal
    to the one the load left behind (a key prefix of its own in the same Redis)."""
    ledger = Ledger()
    load = asyncio.create_task(rig.load(ledger))
    await until(ledger, COUNT // 3)
    await asyncio.to_thread(rig.stack.restart, "processor", signal.SIGKILL)
    await rig.verify(await load)
    prefix = rig.env["REDIS_KEY_PREFIX"] + "rebuilt:"
    env = {**rig.stack.service_env(), "REDIS_KEY_PREFIX": prefix}
    command = [sys.executable, "-m", "orders_processor.commands.rebuild"]
    done = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert f"rebuilt {len(ledger.acked)} orders" in done.stdout, done.stdout
    rebuilt = OrderStore(rig.store.redis, Keys(prefix))
    assert await compare_read_models(rig.store, rebuilt) == []
    again = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 2, "a target that holds orders is refused"


async def test_one_of_two_processors_killed_the_other_takes_over(rig: Rig) -> None:
    rig.add_processor("processor-2")
    ledger = Ledger()
    load = asyncio.create_task(rig.load(ledger))
    await until(ledger, COUNT // 3)
    await asyncio.to_thread(rig.stack.procs["processor-2"].kill)
    await rig.verify(await load)


async def test_a_third_processor_joins_mid_load(rig: Rig) -> None:
    rig.add_processor("processor-2")
    ledger = Ledger()
    load = asyncio.create_task(rig.load(ledger))
    await until(ledger, COUNT // 3)
    await asyncio.to_thread(rig.add_processor, "processor-3")
    await rig.verify(await load)


async def test_kafka_hangs_mid_load(rig: Rig) -> None:
    """A hung broker is the hard case: batches stay in flight past the api's deadline, so
    its 503s are for events Kafka takes later. Those must never become orders."""
    ledger = Ledger()
    load = asyncio.create_task(rig.load(ledger))
    await until(ledger, COUNT // 3)
    rig.infra.kafka.signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(6)  # three times the api's send deadline
    finally:
        rig.infra.kafka.signal(signal.SIGCONT)
    await rig.verify(await load, refusals_expected=True)


async def test_kafka_killed_mid_load_and_restarted(rig: Rig) -> None:
    ledger = Ledger()
    load = asyncio.create_task(rig.load(ledger))
    await until(ledger, COUNT // 3)
    await asyncio.to_thread(rig.infra.restart, "kafka", signal.SIGKILL)
    await rig.verify(await load, refusals_expected=True)


async def test_redis_killed_mid_load_and_restarted_from_its_aof(rig: Rig) -> None:
    ledger = Ledger()
    load = asyncio.create_task(rig.load(ledger))
    await until(ledger, COUNT // 3)
    await asyncio.to_thread(rig.infra.redis.kill)
    async with httpx.AsyncClient(base_url=rig.stack.query_url, timeout=10) as query:
        read = await query.get("/api/orders?limit=5")
    assert read.status_code == 503, "the query service says the store is away, it does not fail"
    await asyncio.sleep(2)
    await asyncio.to_thread(rig.infra.restart, "redis")
    await rig.verify(await load, refusals_expected=True)


async def test_redis_full_mid_load_while_kafka_hangs(rig: Rig) -> None:
    """Redis full (maxmemory reached, noeviction) for about 5 s mid-load, Kafka hung for 2.5 s
    of it: every refusal is a 503 with Retry-After (never a 500), readiness says Redis refuses
    writes, and POSTs without a key answered 503 while Kafka hangs never become orders (the
    abandon mark is written even into a full Redis)."""
    ledger = Ledger()
    load = asyncio.create_task(rig.load(ledger))
    await until(ledger, COUNT // 3)
    unkeyed = {"userId": 98, "productName": "no key", "quantity": 1, "price": 5}  # the ledger's: 1-97
    async with (
        httpx.AsyncClient(timeout=30) as http,
        redis_full(rig.store.redis, rig.store.keys.prefix + "filler"),
    ):
        await asyncio.sleep(1)
        api_ready = await http.get(f"{rig.stack.api_url}/health/ready")
        processor_ready = await http.get(f"{rig.stack.processor_url}/health/ready")
        rig.infra.kafka.signal(signal.SIGSTOP)
        try:
            refused = await asyncio.gather(
                *(http.post(f"{rig.stack.api_url}/api/orders", json=unkeyed) for _ in range(10))
            )
        finally:
            rig.infra.kafka.signal(signal.SIGCONT)
        await asyncio.sleep(1.5)
    assert [r.status_code for r in refused] == [503] * 10, [r.text for r in refused]
    for ready in (api_ready, processor_ready):
        assert ready.status_code == 503
        assert ready.json()["data"]["redis"].startswith("down: refuses writes (OOM "), ready.text
    await rig.verify(await load, refusals_expected=True)  # no order lost, doubled or phantom
    assert not {status for status in ledger.answers if status >= 500} - {503}, ledger.answers
    assert await rig.store.count(partial(rig.store.keys.by_user, 98)) == 0, "a 503 became an order"
    api_log = rig.stack.procs["api"].log_path.read_text(errors="replace")
    assert "Traceback" not in api_log, "a refusal is one log line, not a traceback"


async def test_poison_messages_between_good_ones(rig: Rig) -> None:
    ledger = Ledger()
    load = asyncio.create_task(rig.load(ledger))
    await until(ledger, COUNT // 4)
    good = Order.place(
        OrderCreate.model_validate({"userId": 1, "productName": "x", "quantity": 1, "price": 1})
    )
    envelope = json.loads(encode_placed(good))
    poison = [
        b"not json at all",
        b'{"specversion": "1.0"}',
        json.dumps({**envelope, "type": "order.teleported"}).encode(),
        json.dumps({**envelope, "data": {**envelope["data"], "quantity": 0}}).encode(),
        json.dumps({**envelope, "subject": "someone-else"}).encode(),
    ] * 10
    producer = AIOKafkaProducer(bootstrap_servers=rig.infra.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for n, value in enumerate(poison):
            await producer.send_and_wait(rig.topic, value, key=f"poison-{n}".encode())
            await asyncio.sleep(0.02)  # spread between the good ones
    finally:
        await producer.stop()
    await rig.verify(await load)
    dead = await read_records(rig.infra.kafka_bootstrap, rig.env["KAFKA_DLQ_TOPIC"], len(poison))
    assert sorted(r.value or b"" for r in dead) == sorted(poison)
    assert all(dict(r.headers).get("dlq.reason") for r in dead)


async def test_processor_sigterm_drains_and_a_restart_repeats_nothing(rig: Rig) -> None:
    ledger = Ledger()
    load = asyncio.create_task(rig.load(ledger))
    await until(ledger, COUNT // 3)
    processor = rig.stack.procs["processor"]
    started = time.monotonic()
    processor.signal(signal.SIGTERM)
    code = await asyncio.to_thread(processor.wait, 30)
    assert code == 0, "exited by itself, cleanly, within the drain bound"
    took = time.monotonic() - started
    in_flight = await rig.store.count(partial(rig.store.keys.by_status, "PROCESSING"))
    assert in_flight == 0, "the orders it had started were finished, not left PROCESSING"
    await asyncio.to_thread(rig.stack.restart, "processor", signal.SIGTERM)
    await rig.verify(await load)
    async with httpx.AsyncClient(timeout=10) as http:
        port = rig.stack.procs["processor"].env["PROCESSOR_PORT"]
        metrics = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    assert metric_value(metrics, "processor_orders_replayed_total") == 0, (
        f"the restart re-processed: {metrics}"
    )
    print(f"SIGTERM to exit: {took:.1f}s")


async def test_one_idempotency_key_fifty_times_at_once(rig: Rig) -> None:
    body = {"userId": 5, "productName": "Desk", "quantity": 1, "price": 120.0}
    headers = {"Idempotency-Key": "order-form-submit-1"}
    async with httpx.AsyncClient(base_url=rig.stack.api_url, timeout=30) as api:
        responses = await asyncio.gather(
            *(api.post("/api/orders", json=body, headers=headers) for _ in range(50))
        )
    assert {r.status_code for r in responses} == {202}
    (order_id,) = {r.json()["data"]["orderId"] for r in responses}
    ledger = Ledger(acked={order_id: headers["Idempotency-Key"]})
    await settle(rig.store, ledger, timeout=60)
    assert await rig.store.count(rig.store.keys.all_orders) == 1
    assert [h.status for h in await rig.store.history(order_id)] == ["PLACED", "PROCESSING", "COMPLETED"]


async def _processor_metrics(rig: Rig) -> str:
    async with httpx.AsyncClient(timeout=5) as http:
        return (await http.get(f"{rig.stack.processor_url}/metrics")).text


def _lag(text: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "processor_consumer_lag"
    )


async def test_processor_down_during_load_lag_rises_and_returns_to_zero(rig: Rig) -> None:
    """The processor killed: the orders the api accepts meanwhile are lag once it is back,
    which it works off to 0; every histogram counts each accepted order once."""
    await asyncio.to_thread(rig.stack.procs["processor"].kill)
    ledger = await rig.load(Ledger(), cancel_every=0)
    await asyncio.to_thread(rig.stack.restart, "processor", signal.SIGKILL)
    await asyncio.to_thread(rig.stack.wait_ready, "processor")
    lags: list[float] = []
    async with asyncio.timeout(180):
        while not lags or lags[-1] > 0 or max(lags) == 0:
            lags.append(_lag(await _processor_metrics(rig)))
            await asyncio.sleep(0.2)
    assert max(lags) > 0, lags
    await rig.verify(ledger)
    processor = await _processor_metrics(rig)
    accepted = len(ledger.acked)
    assert metric_value(processor, "processor_order_placed_to_completed_seconds_count") == accepted
    async with httpx.AsyncClient(timeout=5) as http:
        api = (await http.get(f"{rig.stack.api_url}/metrics")).text
    assert metric_value(api, "api_kafka_send_duration_seconds_count", {"kind": "single"}) == accepted
    assert (
        metric_value(
            api,
            "api_http_request_duration_seconds_count",
            {"method": "POST", "route": "/api/orders", "status": "202"},
        )
        == accepted
    )


async def test_dead_letters_redriven_once_the_bug_is_fixed(rig: Rig) -> None:
    """A processing bug rejects a class of orders under load: they dead-letter. Redriven while
    the bug is still on they come back with a replay count, and past the limit go to
    quarantine. Once it is fixed, a redrive completes every order exactly once, and a second
    redrive changes nothing."""
    from orders_processor.commands.dlq import DeadLetter, read_dead_letters, redrive
    from orders_processor.settings import Settings as ProcessorSettings

    def restart_processor(**env: str) -> None:
        rig.stack.procs.pop("processor").stop()
        rig.stack.start_service("processor", **env)
        rig.stack.wait_ready("processor")

    rig.env["KAFKA_QUARANTINE_TOPIC"] = quarantine = f"{rig.topic}.quarantine"
    settings = ProcessorSettings(
        kafka_bootstrap_servers=rig.infra.kafka_bootstrap,
        kafka_orders_topic=rig.topic,
        kafka_dlq_topic=rig.env["KAFKA_DLQ_TOPIC"],
        kafka_quarantine_topic=quarantine,
        dlq_max_replays=1,
    )
    await asyncio.to_thread(restart_processor, PROCESSOR_REJECT_PRODUCTS=r"^item \d*7$")
    ledger = await rig.load(Ledger())
    rejected = [
        order_id
        for order_id in ledger.acked
        if str(await rig.store.redis.hget(rig.store.keys.order(order_id), "productName")).endswith("7")
    ]
    assert rejected
    async with asyncio.timeout(120):
        while len(letters := await read_dead_letters(settings)) < len(rejected):
            await asyncio.sleep(0.5)
    assert {letter.order_id for letter in letters} == set(rejected)
    assert all("fault injection" in letter.reason for letter in letters)

    # Still broken: a redrive comes back with its count; the next one goes to quarantine.
    one = rejected[0]
    planned = await redrive(settings, [d for d in letters if d.order_id == one], dry_run=True)
    assert [item.topic for item in planned] == [rig.topic]  # and nothing sent: see below
    await redrive(settings, [d for d in letters if d.order_id == one])
    async with asyncio.timeout(60):
        while not [d for d in await read_dead_letters(settings) if d.order_id == one and d.replays == 1]:
            await asyncio.sleep(0.5)
    again = [d for d in await read_dead_letters(settings) if d.order_id == one and d.replays == 1]
    (sent,) = await redrive(settings, again)
    assert sent.topic == quarantine
    (held,) = await read_records(rig.infra.kafka_bootstrap, quarantine, 1)
    assert dict(held.headers)["dlq.replay-count"] == b"2"

    # Fixed: redrive everything the bug rejected (each order once: the first dead letter).
    await asyncio.to_thread(restart_processor)
    first: dict[str, DeadLetter] = {}
    for letter in await read_dead_letters(settings.model_copy(update={"dlq_max_replays": 3})):
        first.setdefault(letter.order_id, letter)
    assert set(first) == set(rejected)
    await redrive(settings, list(first.values()))
    await rig.verify(ledger)

    async def state() -> list[object]:
        async with rig.store.redis.pipeline(transaction=False) as pipe:
            for order_id in sorted(ledger.acked):
                pipe.hgetall(rig.store.keys.order(order_id))
                pipe.lrange(rig.store.keys.history(order_id), 0, -1)
            return list(await pipe.execute())

    before = await state()
    await redrive(settings, list(first.values()))  # the same dead letters, again
    async with asyncio.timeout(60):
        while metric_value(await _processor_metrics(rig), "processor_orders_received_total") < 2 * len(first):
            await asyncio.sleep(0.5)
    await asyncio.sleep(1)
    assert await state() == before
    await rig.verify(ledger)
