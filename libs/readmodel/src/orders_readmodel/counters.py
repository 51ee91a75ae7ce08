"""Fixed-window counters in Redis (the rate limits): one key per owner and window, counted up
and expired in one round trip, so a limit holds across every worker and service."""

import asyncio

from redis.asyncio import Redis

from orders_contract.keys import Keys
from orders_readmodel.batching import ScriptBatcher

__all__ = ["WindowCounters"]


class WindowCounters:
    """`add` counts against `Keys.rate_limit(owner, window)`. The key is named by its window's
    number, so its expiry (twice the window, set once) only cleans up."""

    def __init__(self, redis: "Redis", keys: Keys) -> None:
        self._redis = ScriptBatcher(redis)
        self._keys = keys

    async def add(self, owner: str, window: int, amount: int, window_s: int) -> int:
        """Add `amount` to `owner`'s count in `window` (of `window_s` seconds); the new count.
        `owner` names the principal (a digest: no token or subject in a key)."""
        key = self._keys.rate_limit(owner, window)
        # Sent together, in the batcher's next pipeline: the count, and the expiry (NX: set
        # once) sent with every count so that no key outlives its window.
        count, _ = await asyncio.gather(
            self._redis.command("INCRBY", key, amount),
            self._redis.command("EXPIRE", key, window_s * 2, "NX"),
        )
        return int(count)
