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
pipeline's function calls (writes) are confirmed on the replicas before their callers get
an answer: on one Redis by `WAIT <replicas> <timeout>` closing the pipeline, on its one
connection; on a cluster, after the pipeline, on each node that now holds the written
slots, by a marker write and WAIT of their own (replication.py says why): a caller's write
is answered only once that many replicas have it, so a failover does not take back a write that a caller has
acted on (a processor's commit, an idempotency claim, a 503's abandoned mark). Fewer
replicas in time fail those calls with `NotReplicated` (a NOREPLICAS refusal: retried, or
503); the write may still be on the master, and the functions are idempotent.
"""

import asyncio
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from .replication import MARKER_TTL_MS, NotReplicated, Wait, confirm_on_node, marker_for, refusal

__all__ = ["NotReplicated", "ScriptBatcher", "Wait", "pack_with_hiredis"]

_LOST = (OSError, RuntimeError, asyncio.IncompleteReadError)
"""What a connection torn down under a command raises besides redis-py's own errors."""

_Call = tuple[tuple[Any, ...], "asyncio.Future[Any]"]
"""A command's words and the future of its caller."""


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
        wait, writes = self._wait, _writes(batch)
        cluster = isinstance(self._redis, RedisCluster)
        # One Redis: WAIT closes the pipeline, on its one connection (a retry sends it all again).
        wait_in_pipeline = wait is not None and writes and not cluster
        async with self._redis.pipeline(transaction=False) as pipe:
            for words, _ in batch:
                pipe.execute_command(*words)
            if wait_in_pipeline and wait is not None:
                pipe.execute_command("WAIT", wait.replicas, wait.timeout_ms)
            results = list(await pipe.execute(raise_on_error=False))
        if wait is None or not writes:
            return results
        if not cluster:
            if (failure := refusal(results.pop(), wait)) is not None:
                _fail(results, writes, failure)
        else:
            await self._confirm_on_nodes(batch, results, wait)
        return results

    async def _confirm_on_nodes(self, batch: list[_Call], results: list[Any], wait: Wait) -> None:
        """A Redis Cluster: confirm each node's writes of `batch` after the pipeline, on the
        node that holds their slot now (after any redirection), by a marker of its own there
        (replication.py: the cluster pipeline's retries would send a queued WAIT elsewhere)."""
        nodes: dict[str, tuple[str, list[int]]] = {}
        for i in _writes(batch):
            if isinstance(results[i], Exception):
                continue
            key = str(batch[i][0][3])
            node = self._redis.get_node_from_key(key)  # type: ignore[attr-defined]
            name = node.name if node is not None else key  # no owner known: its own confirmation, which fails
            nodes.setdefault(name, (marker_for(key), []))[1].append(i)
        # The nodes' confirmations wait for their replicas side by side, not one after another.
        confirmed = await asyncio.gather(
            *(
                confirm_on_node(self._redis, marker, "1", wait, ttl_ms=MARKER_TTL_MS)
                for marker, _ in nodes.values()
            ),
            return_exceptions=True,
        )
        for (_, writes), outcome in zip(nodes.values(), confirmed, strict=True):
            if isinstance(outcome, Exception):  # those writes' callers get it, and retry
                _fail(results, writes, outcome if isinstance(outcome, NotReplicated) else _failure(outcome))
            elif isinstance(outcome, BaseException):
                raise outcome


def _writes(batch: list[_Call]) -> list[int]:
    """The indexes in `batch` of its writes: function calls with keys."""
    return [i for i, (words, _) in enumerate(batch) if words[0] == "FCALL" and int(words[2])]


def _fail(results: list[Any], writes: list[int], failure: Exception) -> None:
    """Those `writes` that succeeded fail with `failure` (not confirmed on the replicas)."""
    for i in writes:
        if not isinstance(results[i], Exception):
            results[i] = failure


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
