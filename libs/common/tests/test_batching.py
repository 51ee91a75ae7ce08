"""Group commit of Redis scripts, on a real Redis."""

import asyncio
from typing import Any

import pytest
from redis.asyncio import Connection, ConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from orders_common.batching import ScriptBatcher, pack_with_hiredis
from orders_stack import Infra

pytestmark = pytest.mark.redis

INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
FAIL = "return redis.error_reply('refused: ' .. ARGV[1])"


class Counting(ScriptBatcher):
    """Counts the pipelines it sends."""

    pipelines = 0

    async def _pipeline(self, batch: list[Any]) -> list[Any]:
        self.pipelines += 1
        return await super()._pipeline(batch)


async def test_concurrent_runs_share_round_trips_and_each_gets_its_result(
    redis_client: Redis, unique: str
) -> None:
    incr = redis_client.register_script(INCR)
    batcher = Counting(redis_client, max_pipelines=2)
    key = f"test:{unique}:counter"
    results = await asyncio.gather(*(batcher.run(incr, [key], [1]) for _ in range(1000)))
    assert sorted(results) == list(range(1, 1001))
    assert batcher.pipelines <= 10, f"{batcher.pipelines} round trips for 1000 runs"
    alone = await batcher.run(incr, [key], [5])
    assert alone == 1005


async def test_a_failing_script_fails_only_its_caller(redis_client: Redis, unique: str) -> None:
    incr, fail = redis_client.register_script(INCR), redis_client.register_script(FAIL)
    batcher = ScriptBatcher(redis_client)
    key = f"test:{unique}:counter"
    outcomes = await asyncio.gather(
        batcher.run(incr, [key], [1]),
        batcher.run(fail, [key], ["no"]),
        batcher.run(incr, [key], [1]),
        return_exceptions=True,
    )
    assert outcomes[0] == 1
    assert outcomes[2] == 2
    assert isinstance(outcomes[1], ResponseError)
    assert "refused: no" in str(outcomes[1])


async def test_scripts_come_back_after_redis_lost_them(redis_client: Redis, unique: str) -> None:
    incr = redis_client.register_script(INCR)
    batcher = ScriptBatcher(redis_client)
    key = f"test:{unique}:counter"
    assert await batcher.run(incr, [key], [1]) == 1
    await redis_client.script_flush()  # as after a restart
    assert await asyncio.gather(*(batcher.run(incr, [key], [1]) for _ in range(3))) == [2, 3, 4]


async def test_no_connection_fails_every_run_it_would_carry() -> None:
    client = Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)  # nothing listens on port 1
    batcher = ScriptBatcher(client)
    incr = client.register_script(INCR)
    outcomes = await asyncio.gather(
        *(batcher.run(incr, ["x"], [1]) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(outcome, RedisConnectionError) for outcome in outcomes)
    await client.aclose()


@pytest.mark.parametrize(
    "command",
    [
        ("HGETALL", "orders:order:1"),
        ("EVALSHA", "ab" * 20, 2, "k1", "k2", 100_000, "Café ☕", b"\x00raw", -5),
        ("CLIENT SETINFO", "LIB-NAME", "redis-py"),
        ("SET", "k", "x" * 100_000),
    ],
)
def test_hiredis_packs_the_bytes_redis_py_would(command: tuple[Any, ...]) -> None:
    ours = pack_with_hiredis(ConnectionPool()).connection_class()
    assert isinstance(ours, Connection)
    assert b"".join(ours.pack_command(*command)) == b"".join(Connection().pack_command(*command))


async def test_hiredis_packing_round_trips_text(infra: Infra, unique: str) -> None:
    pool = pack_with_hiredis(ConnectionPool.from_url(infra.redis_url, decode_responses=True))
    client = Redis.from_pool(pool)
    try:
        await client.hset(unique, mapping={"name": "Café ☕ / ½", "n": 7})
        assert await client.hgetall(unique) == {"name": "Café ☕ / ½", "n": "7"}
    finally:
        await client.delete(unique)
        await client.aclose()
