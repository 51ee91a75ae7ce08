"""Writes confirmed on replicas (REDIS_WAIT_REPLICAS): WAIT, and what it can and cannot prove.

WAIT answers how many replicas hold the last write *of its own connection*; a master sends
its writes to its replicas in the order it ran them. So a write of ours, then WAIT on the
same connection, confirms every write that node ran before ours, whoever made it
(`confirm_on_node`): the status relay confirms the entries it read (checking, in the same
exchange, that the node still holds the last one: after a failover it may not), and on a
Redis Cluster the batcher confirms each node's function calls after its pipeline.

On a cluster the exchange goes to the node's own connection, with no retry and no
redirection: redis-py's cluster pipeline retries a failed pipeline with the WAIT's target
dropped (it pops `target_nodes`), which would send WAIT to another node, where it proves
nothing. A failed exchange fails the confirmation; the callers retry.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import PipelineCommand, RedisCluster
from redis.exceptions import ResponseError

from orders_contract.keys import hash_tag

__all__ = ["MARKER_TTL_MS", "NotReplicated", "Wait", "confirm_on_node", "marker_for", "refusal"]

MARKER_TTL_MS = 60_000
"""How long the batcher's markers last: they matter only until their WAIT answered."""


@dataclass(frozen=True, slots=True)
class Wait:
    """Writes count once `replicas` replicas have them, waited for `timeout_ms` at most."""

    replicas: int
    timeout_ms: int


class NotReplicated(ResponseError):
    """A write that fewer replicas than asked acknowledged in time (WAIT): a NOREPLICAS refusal."""


def refusal(reached: object, wait: Wait) -> NotReplicated | None:
    """WAIT's answer `reached`, when it falls short of `wait`, as the refusal to report."""
    if not isinstance(reached, Exception) and int(str(reached)) >= wait.replicas:
        return None
    return NotReplicated(
        f"NOREPLICAS a write reached {reached!s} of {wait.replicas} replicas in {wait.timeout_ms} ms (WAIT)"
    )


def marker_for(key: str) -> str:
    """A marker key in `key`'s slot (so on `key`'s node): its hash tag, or the key itself, as
    the marker's tag."""
    return f"{{{hash_tag(key)}}}:replicated"


async def confirm_on_node(
    redis: "Redis | RedisCluster",
    marker: str,
    value: str,
    wait: Wait,
    *,
    ttl_ms: int | None = None,
    holds: tuple[str, str] | None = None,
) -> None:
    """SET `marker` to `value` on its node, then WAIT there for `wait.replicas` replicas:
    returns once they hold every write that node ran before; raises NotReplicated when they
    do not acknowledge in time, the SET is refused (WAIT would then count an older write), or
    with `holds` (a stream key and an entry id in `marker`'s slot) the node lacks that entry."""
    commands: list[tuple[Any, ...]] = []
    if holds is not None:
        commands.append(("XRANGE", holds[0], holds[1], holds[1]))
    commands.append(("SET", marker, value, *(("PX", ttl_ms) if ttl_ms else ())))
    commands.append(("WAIT", wait.replicas, wait.timeout_ms))
    results = await _exchange(redis, marker, commands)
    if holds is not None:
        found = results.pop(0)
        if isinstance(found, Exception) or not found:
            raise NotReplicated(
                f"NOREPLICAS the node no longer holds {holds[1]} of {holds[0]} (failed over?)"
            )
    written, reached = results
    if isinstance(written, Exception) or written is not True:
        raise NotReplicated(f"NOREPLICAS the confirming write was refused: {written!s}")
    if (failure := refusal(reached, wait)) is not None:
        raise failure


async def _exchange(
    redis: "Redis | RedisCluster", key: str, commands: Sequence[tuple[Any, ...]]
) -> list[Any]:
    """`commands`, in order, on one connection of `key`'s node; their replies (errors as values)."""
    if isinstance(redis, RedisCluster):
        node = redis.get_node_from_key(key)
        if node is None:
            raise NotReplicated(f"NOREPLICAS no node holds the slot of {key} (the cluster is changing)")
        queued = [PipelineCommand(i, *words) for i, words in enumerate(commands)]
        await node.execute_pipeline(queued)
        return [command.result for command in queued]
    async with redis.pipeline(transaction=False) as pipe:  # a retry sends them all again, on one connection
        for words in commands:
            pipe.execute_command(*words)
        return list(await pipe.execute(raise_on_error=False))
