"""REDIS_WAIT_REPLICAS: a pipeline's writes are answered once replicas have them (WAIT).

A real replica of the test Redis (a second redis-server, `replicaof`, stopped at the end
whatever happens) acknowledges them; asked for more replicas than there are, the writes
fail as a NOREPLICAS refusal, and reads in the same pipeline keep their answers.
"""

import asyncio
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from orders_contract.keys import Keys
from orders_contract.models import Order
from orders_readmodel.batching import NotReplicated, Wait
from orders_readmodel.store import OrderStore
from orders_stack import Infra
from orders_stack.stack import free_port
from orders_web.http import redis_refusal

pytestmark = pytest.mark.redis


@pytest.fixture
def replica(infra: Infra, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(tmp_path), "--replicaof", "127.0.0.1", str(infra.redis_port)]
    proc = subprocess.Popen([server, *args], stdout=subprocess.DEVNULL)
    try:
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _linked(replica: int) -> None:
    async with Redis(port=replica, decode_responses=True) as r, asyncio.timeout(30):
        while True:
            try:
                if (await r.info("replication")).get("master_link_status") == "up":
                    return
            except OSError:
                pass
            await asyncio.sleep(0.1)


async def test_writes_wait_for_the_replica(
    redis_client: Redis, test_env: dict[str, str], replica: int, new_order: Callable[..., Order]
) -> None:
    await _linked(replica)
    keys = Keys(test_env["REDIS_KEY_PREFIX"])
    store = OrderStore(redis_client, keys, wait=Wait(1, 5000))
    order = new_order()
    assert (await store.create(order)).created
    async with Redis(port=replica, decode_responses=True) as r:
        assert await r.hget(keys.order(order.order_id), "status") == "PLACED"  # there when answered

    greedy = OrderStore(redis_client, keys, wait=Wait(2, 50))
    other = new_order()
    write, read = greedy.create(other), greedy.get(order.order_id)
    with pytest.raises(NotReplicated) as refused:
        await write
    assert redis_refusal(refused.value) == "NOREPLICAS"
    assert (await read) == await store.get(order.order_id)  # the read in that pipeline is answered
    assert (await store.create(other)).status is not None  # the write itself is on the master: idempotent


async def test_the_relay_publishes_only_what_the_replica_holds(
    redis_client: Redis, test_env: dict[str, str], replica: int, new_order: Callable[..., Order]
) -> None:
    """`confirm_replicated` covers entries another connection wrote (WAIT alone counts only its
    own connection's writes): the stream's entries are on the replica once it returns, and it
    refuses when no replica acknowledges."""
    await _linked(replica)
    keys = Keys(test_env["REDIS_KEY_PREFIX"])
    writer = OrderStore(redis_client, keys)  # no WAIT of its own
    async with Redis.from_url(test_env["REDIS_URL"], decode_responses=True) as reader_client:
        stream = OrderStore(reader_client, keys).stream()
        for _ in range(20):
            assert (await writer.create(new_order())).created
        updates = await stream.updates_after("0-0")
        assert updates is not None
        assert len(updates) == 20
        await stream.confirm_replicated(updates[-1].position, Wait(1, 5000))
        async with Redis(port=replica, decode_responses=True) as r:
            assert await r.xlen(keys.updates(0)) == 20, "every entry read is on the replica"
            assert await r.get(keys.relay_replicated(0)) == updates[-1].position
            with pytest.raises(NotReplicated, match="no longer holds"):
                await stream.confirm_replicated("1-1", Wait(1, 5000))  # not an entry of this stream
            await r.replicaof("NO", "ONE")  # no replica left to acknowledge
            with pytest.raises(NotReplicated):
                await stream.confirm_replicated(updates[-1].position, Wait(1, 200))


async def test_a_refused_confirming_write_confirms_nothing(
    redis_client: Redis, test_env: dict[str, str], replica: int, new_order: Callable[..., Order]
) -> None:
    """WAIT counts the connection's last write that went through: were the marker's SET refused
    (a master that wants more replicas than it has), WAIT would answer for an older one."""
    await _linked(replica)
    keys = Keys(test_env["REDIS_KEY_PREFIX"])
    assert (await OrderStore(redis_client, keys).create(new_order())).created
    stream = OrderStore(redis_client, keys).stream()
    updates = await stream.updates_after("0-0")
    assert updates
    await stream.confirm_replicated(updates[-1].position, Wait(1, 5000))  # it can pass
    await redis_client.config_set("min-replicas-to-write", 2)
    try:
        with pytest.raises(NotReplicated, match="refused"):
            await stream.confirm_replicated(updates[-1].position, Wait(1, 5000))
    finally:
        await redis_client.config_set("min-replicas-to-write", 0)
