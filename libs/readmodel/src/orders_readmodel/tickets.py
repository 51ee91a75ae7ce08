"""Single-use secrets with a deadline in Redis (the live streams' tickets): only the SHA-256
of a ticket is written, and taking one deletes it in the same step (GETDEL)."""

import hashlib

from redis.asyncio import Redis

from orders_contract.keys import Keys
from orders_readmodel.batching import ScriptBatcher

__all__ = ["TicketStore"]


def _digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


class TicketStore:
    """`put` a ticket with what it stands for, `take` it back once."""

    def __init__(self, redis: "Redis", keys: Keys) -> None:
        self._redis = ScriptBatcher(redis)
        self._keys = keys

    async def put(self, ticket: str, value: bytes, ttl_s: int) -> None:
        """Keep `value` under the ticket's digest for `ttl_s` seconds."""
        await self._redis.command("SET", self._keys.stream_ticket(_digest(ticket)), value, "EX", ttl_s)

    async def take(self, ticket: str) -> str | None:
        """The value of an unused, unexpired ticket, which is used up; None otherwise."""
        value = await self._redis.command("GETDEL", self._keys.stream_ticket(_digest(ticket)))
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)
