"""Group commit for Redis scripts: what many tasks ask for at once goes out as one pipeline.

The processor works on thousands of orders at a time and the api on hundreds
of requests; each wants one script run. Sent one by one, every run is a round
trip and a pair of syscalls on each side. The `ScriptBatcher` queues the runs
that tasks ask for while a pipeline is on its way and sends them together
when it returns (at most `max_pipelines` in flight), so under load one round
trip carries hundreds of runs, and a lone request still goes out at once.

Each caller gets its own result, or its own error: a script that fails fails
only its caller; a connection that fails fails the runs it carried (the
callers retry them, and the scripts are idempotent). Not a transaction: runs
in one pipeline are not atomic together, each script is atomic by itself.
"""

import asyncio
from typing import Any

import hiredis
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

__all__ = ["ScriptBatcher", "pack_with_hiredis"]

_LOST = (OSError, RuntimeError, asyncio.IncompleteReadError)
"""What a connection torn down under a command raises besides redis-py's own errors."""

_Run = tuple[AsyncScript | None, list[Any], list[Any], "asyncio.Future[Any]"]
"""(script, keys, args, future); a plain command has no script and its words in `args`."""


class ScriptBatcher:
    def __init__(self, redis: "Redis", max_pipelines: int = 4, max_batch: int = 2000) -> None:
        self._redis = redis
        self._max_pipelines = max_pipelines
        self._max_batch = max_batch
        self._queue: list[_Run] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._starting = False  # a pipeline task is about to take the queue

    def run(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> "asyncio.Future[Any]":
        """Run `script`, sent in the next pipeline; await it for what it returns."""
        return self._enqueue(script, keys, args)

    def command(self, *words: Any) -> "asyncio.Future[Any]":
        """Send a plain command (HGETALL key, say) in the next pipeline; await it for its reply."""
        return self._enqueue(None, [], list(words))

    def _enqueue(self, script: AsyncScript | None, keys: list[Any], args: list[Any]) -> "asyncio.Future[Any]":
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((script, keys, args, future))
        self._send()
        return future

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
            missing = {
                id(script): script
                for (script, *_), result in zip(batch, results, strict=True)
                if script is not None and _no_script(result)
            }
            if missing:  # Redis restarted without its script cache: load, then send those again
                for script in missing.values():
                    script.sha = await self._redis.script_load(script.script)
                again = [i for i, result in enumerate(results) if _no_script(result)]
                for i, result in zip(again, await self._pipeline([batch[i] for i in again]), strict=True):
                    results[i] = result
        except Exception as exc:  # noqa: BLE001 - each caller gets its pipeline's failure
            if isinstance(exc, _LOST):
                # A socket torn down under a write (Redis killed, say) can surface as the event
                # loop's RuntimeError or an OSError: to callers it is a lost connection.
                exc = RedisConnectionError(f"connection to Redis lost: {exc!r}")
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:
            for *_, future in batch:
                future.cancel()
            raise
        for (*_, future), result in zip(batch, results, strict=True):
            if future.done():  # its caller gave up waiting
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _pipeline(self, batch: list[_Run]) -> list[Any]:
        # EVALSHA by hand: redis-py's pipelined scripts cost a SCRIPT EXISTS round trip each time.
        async with self._redis.pipeline(transaction=False) as pipe:
            for script, keys, args, _ in batch:
                if script is None:
                    pipe.execute_command(*args)
                else:
                    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            return list(await pipe.execute(raise_on_error=False))


def _no_script(result: object) -> bool:
    return isinstance(result, NoScriptError)


class _HiredisPacking(AbstractConnection):
    """Commands packed by hiredis (C) instead of redis-py's asyncio connection (Python):
    the same bytes, at a fraction of the cost for scripts with many arguments."""

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
