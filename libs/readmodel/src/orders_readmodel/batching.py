"""Group commit for Redis calls: what many tasks ask for at once goes out as one pipeline.

The processor works on thousands of orders at a time and the api on hundreds
of requests; each wants one function call (FCALL) or command. Sent one by one,
every call is a round trip and a pair of syscalls on each side. The
`ScriptBatcher` queues the calls that tasks ask for while a pipeline is on its
way and sends them together when it returns (at most `max_pipelines` in
flight), so under load one round trip carries hundreds of calls, and a lone
request still goes out at once.

Each caller gets its own result, or its own error: a call that fails fails
only its caller; a connection that fails fails the calls it carried (the
callers retry them, and the functions are idempotent). Not a transaction:
calls in one pipeline are not atomic together, each function is atomic by
itself.

The batcher holds the Functions library its calls need. When Redis answers
that a function is not found (it restarted empty, or FUNCTION FLUSH), it
loads the library once (FUNCTION LOAD REPLACE) and sends those calls again.

With `wait` (REDIS_WAIT_REPLICAS, set on a Redis Cluster whose masters have replicas), a
pipeline that carries function calls (writes) ends with `WAIT <replicas> <timeout>` on each
node it wrote to, on the same connection as those writes (redis-py's cluster pipeline sends
one node's commands on one connection, in order): a caller's write is answered only once
that many replicas have it, so a failover does not take back a write that a caller has
acted on (a processor's commit, an idempotency claim, a 503's abandoned mark). Fewer
replicas in time fail those calls with `NotReplicated` (a NOREPLICAS refusal: retried, or
503); the write may still be on the master, and the functions are idempotent.
"""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import hiredis
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

__all__ = ["NotReplicated", "ScriptBatcher", "Wait", "pack_with_hiredis", "write_replicated"]

_LOST = (OSError, RuntimeError, asyncio.IncompleteReadError)
"""What a connection torn down under a command raises besides redis-py's own errors."""

_Call = tuple[tuple[Any, ...], "asyncio.Future[Any]"]
"""A command's words and the future of its caller."""


@dataclass(frozen=True, slots=True)
class Wait:
    """Writes count once `replicas` replicas have them, waited for `timeout_ms` at most."""

    replicas: int
    timeout_ms: int


class NotReplicated(ResponseError):
    """A write that fewer replicas than asked acknowledged in time (WAIT): a NOREPLICAS refusal."""


class ScriptBatcher:
    """Sends the calls of concurrent tasks together; `library` is the Functions library
    (its source) that `load` puts in Redis, and that is loaded again when Redis lost it."""

    def __init__(
        self,
        redis: "Redis",
        library: str | None = None,
        max_pipelines: int = 4,
        max_batch: int = 2000,
        wait: Wait | None = None,
    ) -> None:
        self._redis = redis
        self._wait = wait
        self._library = library
        self._max_pipelines = max_pipelines
        self._max_batch = max_batch
        self._queue: list[_Call] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._starting = False  # a pipeline task is about to take the queue
        self._loading: asyncio.Task[None] | None = None

    def call(self, function: str, keys: Sequence[Any], args: Sequence[Any]) -> "asyncio.Future[Any]":
        """FCALL `function` with `keys` and `args`, sent in the next pipeline; await it for
        what it returns."""
        return self.command("FCALL", function, len(keys), *keys, *args)

    def command(self, *words: Any) -> "asyncio.Future[Any]":
        """Send a plain command (HGETALL key, say) in the next pipeline; await it for its reply."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((words, future))
        self._send()
        return future

    async def load(self) -> None:
        """FUNCTION LOAD REPLACE the library. Callers that ask while a load is on its way
        share it."""
        if self._library is None:
            raise RuntimeError("this batcher has no library to load")
        if self._loading is None or self._loading.done():
            self._loading = asyncio.create_task(self._load(self._library))
        await asyncio.shield(self._loading)

    async def _load(self, library: str) -> None:
        await self._redis.function_load(library, replace=True)

    def _send(self) -> None:
        if self._queue and not self._starting and len(self._in_flight) < self._max_pipelines:
            self._starting = True
            task = asyncio.create_task(self._execute())
            self._in_flight.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: "asyncio.Task[None]") -> None:
        self._in_flight.discard(task)
        self._send()

    async def _execute(self) -> None:
        # Takes what was queued until now: every caller that ran in the meantime.
        self._starting = False
        batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
        self._send()
        try:
            results = await self._pipeline(batch)
            again = [i for i, result in enumerate(results) if _not_loaded(result)]
            if again and self._library is not None:
                await self._recover(batch, results, again)
        except Exception as exc:  # noqa: BLE001 - each caller gets its pipeline's failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(_failure(exc))
            return
        except BaseException:
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # its caller gave up waiting
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _recover(self, batch: list[_Call], results: list[Any], again: list[int]) -> None:
        """Redis lost the library: load it, then send the calls at `again` once more. Their
        new results replace the old in `results`; a failure becomes the result of each."""
        try:
            await self.load()
            retried = await self._pipeline([batch[i] for i in again])
        except Exception as exc:  # noqa: BLE001 - the other calls of the batch keep their results
            retried = [_failure(exc)] * len(again)
        for i, result in zip(again, retried, strict=True):
            results[i] = result

    async def _pipeline(self, batch: list[_Call]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for words, _ in batch:
                pipe.execute_command(*words)
            waits = self._waits(pipe, batch) if self._wait is not None else []
            results = list(await pipe.execute(raise_on_error=False))
        if waits and self._wait is not None:
            wanted = self._wait
            for writes, reached in zip(waits, results[len(batch) :], strict=True):
                if (failure := _refusal(reached, wanted)) is not None:
                    for i in writes:
                        if not isinstance(results[i], Exception):
                            results[i] = failure
            del results[len(batch) :]
        return results

    def _waits(self, pipe: Any, batch: list[_Call]) -> list[list[int]]:
        """Queue a WAIT after the writes (FCALLs) of `batch` on each node they go to; for each
        WAIT, in order, the indexes in `batch` of the writes it covers."""
        assert self._wait is not None
        writes: dict[str, list[int]] = {}
        nodes: dict[str, Any] = {}
        cluster = isinstance(self._redis, RedisCluster)
        for i, (words, _) in enumerate(batch):
            if words[0] != "FCALL" or not int(words[2]):
                continue
            node = self._redis.get_node_from_key(words[3]) if cluster else None  # type: ignore[attr-defined]
            name = node.name if node is not None else ""
            nodes[name] = node
            writes.setdefault(name, []).append(i)
        for name in writes:
            target = {"target_nodes": nodes[name]} if cluster else {}
            pipe.execute_command("WAIT", self._wait.replicas, self._wait.timeout_ms, **target)
        return list(writes.values())


async def write_replicated(redis: "Redis | RedisCluster", key: str, value: str, wait: Wait) -> None:
    """SET `key` to `value`, then WAIT until `wait.replicas` replicas have it: raises
    NotReplicated if they do not in `wait.timeout_ms`. A master sends its writes to its
    replicas in the order it ran them, so this also confirms every write its node ran
    before, whoever made it (WAIT alone counts only its own connection's writes)."""
    target = {"target_nodes": redis.get_node_from_key(key)} if isinstance(redis, RedisCluster) else {}
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(key, value)
        pipe.execute_command("WAIT", wait.replicas, wait.timeout_ms, **target)
        _, reached = await pipe.execute(raise_on_error=False)
    if (failure := _refusal(reached, wait)) is not None:
        raise failure


def _refusal(reached: object, wait: Wait) -> NotReplicated | None:
    """WAIT's answer `reached`, when it falls short of `wait`, as the refusal to report."""
    if not isinstance(reached, Exception) and int(str(reached)) >= wait.replicas:
        return None
    return NotReplicated(
        f"NOREPLICAS a write reached {reached!s} of {wait.replicas} replicas in {wait.timeout_ms} ms (WAIT)"
    )


def _failure(exc: Exception) -> Exception:
    """What callers get for a pipeline that failed as a whole."""
    if isinstance(exc, _LOST):
        # A socket torn down under a write (Redis killed, say) can surface as the event
        # loop's RuntimeError or an OSError: to callers it is a lost connection.
        return RedisConnectionError(f"connection to Redis lost: {exc!r}")
    return exc


def _not_loaded(result: object) -> bool:
    """Redis's answer to FCALL of a function it does not have."""
    return isinstance(result, ResponseError) and str(result).startswith("Function not found")


class _HiredisPacking(AbstractConnection):
    """Commands packed by hiredis (C) instead of redis-py's asyncio connection (Python):
    the same bytes, at a fraction of the cost for calls with many arguments."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " in args[0]:  # "CLIENT SETINFO", as redis-py splits it
            args = (*args[0].split(), *args[1:])
        return [hiredis.pack_command(args)]


def pack_with_hiredis(pool: ConnectionPool) -> ConnectionPool:
    """Make the connections `pool` opens from now on pack commands with hiredis."""
    base = pool.connection_class
    if issubclass(base, _HiredisPacking):
        return pool
    pool.connection_class = type(f"Hiredis{base.__name__}", (_HiredisPacking, base), {})
    return pool
