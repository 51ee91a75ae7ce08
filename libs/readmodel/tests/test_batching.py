"""Group commit of Redis function calls, on a real Redis."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Connection, ConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from orders_readmodel.batching import ScriptBatcher, pack_with_hiredis
from orders_stack import Infra

pytestmark = pytest.mark.redis

LIBRARY = """#!lua name=batching_test
redis.register_function('batching_test_incr', function(keys, args)
  return redis.call('INCRBY', keys[1], args[1])
end)
redis.register_function('batching_test_fail', function(keys, args)
  return redis.error_reply('refused: ' .. args[1])
end)
"""


class Counting(ScriptBatcher):
    """Counts the pipelines it sends and the loads it makes."""

    pipelines = 0
    loads = 0

    async def _pipeline(self, batch: list[Any]) -> list[Any]:
        self.pipelines += 1
        return await super()._pipeline(batch)

    async def _load(self, library: str) -> None:
        self.loads += 1
        await super()._load(library)


async def delete_library(redis: Redis) -> None:
    if await redis.function_list("batching_test"):
        await redis.function_delete("batching_test")


@pytest.fixture
async def batcher(redis_client: Redis) -> AsyncIterator[Counting]:
    """A batcher of the test library, which is not loaded yet."""
    await delete_library(redis_client)
    yield Counting(redis_client, LIBRARY, max_pipelines=2)
    await delete_library(redis_client)


async def test_concurrent_calls_share_round_trips_and_each_gets_its_result(
    batcher: Counting, unique: str
) -> None:
    await batcher.load()
    key = f"test:{unique}:counter"
    results = await asyncio.gather(*(batcher.call("batching_test_incr", [key], [1]) for _ in range(1000)))
    assert sorted(results) == list(range(1, 1001))
    assert batcher.pipelines <= 10, f"{batcher.pipelines} round trips for 1000 calls"
    alone = await batcher.call("batching_test_incr", [key], [5])
    assert alone == 1005


async def test_load_replaces_the_library(batcher: Counting, redis_client: Redis) -> None:
    await batcher.load()
    await batcher.load()  # REPLACE: loading again is no error
    libraries: Any = await redis_client.function_list("batching_test")
    assert len(libraries) == 1
    assert batcher.loads == 2
    await asyncio.gather(batcher.load(), batcher.load(), batcher.load())
    assert batcher.loads == 3, "loads asked for at once are one"


async def test_a_failing_call_fails_only_its_caller(batcher: Counting, unique: str) -> None:
    await batcher.load()
    key = f"test:{unique}:counter"
    outcomes = await asyncio.gather(
        batcher.call("batching_test_incr", [key], [1]),
        batcher.call("batching_test_fail", [key], ["no"]),
        batcher.call("batching_test_incr", [key], [1]),
        return_exceptions=True,
    )
    assert outcomes[0] == 1
    assert outcomes[2] == 2
    assert isinstance(outcomes[1], ResponseError)
    assert "refused: no" in str(outcomes[1])


@pytest.mark.parametrize("flush", [True, False])
async def test_the_library_comes_back_once_after_redis_lost_it(
    batcher: Counting, redis_client: Redis, unique: str, flush: bool
) -> None:
    key = f"test:{unique}:counter"
    assert await batcher.call("batching_test_incr", [key], [1]) == 1, "loaded on the first call"
    assert batcher.loads == 1
    if flush:  # as a Redis that restarted empty
        await redis_client.function_flush()
    else:
        await delete_library(redis_client)
    calls = [batcher.call("batching_test_incr", [key], [1]) for _ in range(3)]
    plain = batcher.command("GET", key)  # a plain command in the same pipeline is not sent twice
    assert await asyncio.gather(*calls) == [2, 3, 4]
    assert await plain == "1"
    assert batcher.loads == 2


async def test_a_function_the_library_lacks_is_retried_once_only(batcher: Counting) -> None:
    with pytest.raises(ResponseError, match="Function not found"):
        await batcher.call("batching_test_missing", [], [])
    assert (batcher.loads, batcher.pipelines) == (1, 2)


async def test_a_library_that_fails_to_load_fails_only_the_calls_that_needed_it(
    redis_client: Redis, unique: str
) -> None:
    await delete_library(redis_client)
    broken = Counting(redis_client, "#!lua name=batching_test\nthis is not lua")
    key = f"test:{unique}:counter"
    await redis_client.set(key, 7)
    call = broken.call("batching_test_incr", [key], [1])
    plain = broken.command("GET", key)
    with pytest.raises(ResponseError, match="compil"):
        await call
    assert await plain == "7"
    assert broken.loads == 1


async def test_without_a_library_a_missing_function_is_the_callers_error(redis_client: Redis) -> None:
    plain = Counting(redis_client)
    with pytest.raises(ResponseError, match="Function not found"):
        await plain.call("batching_test_missing", [], [])
    assert (plain.loads, plain.pipelines) == (0, 1)
    with pytest.raises(RuntimeError):
        await plain.load()


async def test_no_connection_fails_every_call_it_would_carry() -> None:
    client = Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)  # nothing listens on port 1
    batcher = ScriptBatcher(client, LIBRARY)
    outcomes = await asyncio.gather(
        *(batcher.call("batching_test_incr", ["x"], [1]) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(outcome, RedisConnectionError) for outcome in outcomes)
    await client.aclose()


@pytest.mark.parametrize(
    "command",
    [
        ("HGETALL", "orders:order:1"),
        ("FCALL", "orders_start", 2, "k1", "k2", 100_000, "Café ☕", b"\x00raw", -5),
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
