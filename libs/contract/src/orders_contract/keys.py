"""Redis key names of the read model; nothing else spells them.

The read model is split in `shards` (REDIS_SHARDS): everything one atomic step touches lives
in one shard. An order's shard comes from the random bits of its id (`shard_of`), and every
key of a shard carries the shard's hash tag, so that on a Redis Cluster all of them are in
one slot: the order's hash, history and abandoned mark, the shard's indexes (all, by user,
by status), its update stream and its relay lease. Idempotency claims, rate-limit counters,
stream tickets and health keys are single keys and carry no tag.

With one shard (one Redis) there is no tag: the layout is the one the read model always had.
The tags are chosen so that the shards' slots are spread evenly over 16384 (shard i of n in
slots i*16384/n to (i+1)*16384/n), which is how `redis-cli --cluster create` splits the slots
between masters: n shards on m masters, m dividing n, put n/m shards on each.
"""

import binascii
import itertools
from dataclasses import dataclass, field
from functools import cache

__all__ = ["SLOTS", "Keys", "hash_tag", "key_slot", "shard_of", "shard_tags"]

SLOTS = 16384
"""Redis Cluster's hash slots."""


def hash_tag(key: str) -> str:
    """What Redis Cluster hashes of `key`: its hash tag (the text inside its first `{` and
    the first `}` after it, when not empty), else the whole key."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def key_slot(key: str) -> int:
    """The Redis Cluster slot of `key`: CRC16 (XMODEM, as binascii.crc_hqx computes it) of
    its hash tag."""
    return binascii.crc_hqx(hash_tag(key).encode(), 0) % SLOTS


@cache
def shard_tags(shards: int) -> tuple[str, ...]:
    """The hash tag of each of `shards` shards: the first text `<i>.<j>` whose slot lies in
    the shard's even part of the slots ('' for one shard: no tag)."""
    if shards == 1:
        return ("",)
    tags = []
    for shard in range(shards):
        low, high = shard * SLOTS // shards, (shard + 1) * SLOTS // shards
        tags.append(next(t for j in itertools.count() if low <= key_slot(t := f"{shard}.{j}") < high))
    return tuple(tags)


def shard_of(order_id: str, shards: int) -> int:
    """The shard of an order: its id's last 32 bits (random in a UUIDv7) modulo `shards`."""
    return int(order_id[-8:], 16) % shards if shards > 1 else 0


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix (tests give each their own), for `shards` shards."""

    prefix: str = ""
    shards: int = 1
    _heads: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.shards < 1:
            raise ValueError("shards must be 1 or more")
        if self.shards > 1 and ("{" in self.prefix or "}" in self.prefix):
            raise ValueError("a key prefix with braces would replace the shards' hash tags")
        tags = shard_tags(self.shards)
        object.__setattr__(self, "_heads", tuple(f"{self.prefix}{{{t}}}" if t else self.prefix for t in tags))

    def shard_of(self, order_id: str) -> int:
        return shard_of(order_id, self.shards)

    def _of(self, order_id: str) -> str:
        return self._heads[shard_of(order_id, self.shards)]

    def order(self, order_id: str) -> str:
        """Hash: the order's fields, as the API returns them."""
        return f"{self._of(order_id)}order:{order_id}"

    def history(self, order_id: str) -> str:
        """List: one JSON entry per transition, oldest first."""
        return f"{self._of(order_id)}order:{order_id}:history"

    def abandoned(self, order_id: str) -> str:
        """Set: ids of the order's Kafka events that the api answered 503 for; never applied."""
        return f"{self._of(order_id)}order:{order_id}:abandoned"

    def all_orders(self, shard: int) -> str:
        """Sorted set: every order id of a shard, score 0, so ids sort by text (UUIDv7: by time)."""
        return f"{self._heads[shard]}orders:all"

    def by_user(self, user_id: int, shard: int) -> str:
        """Sorted set like all_orders, one user's orders in a shard."""
        return f"{self._heads[shard]}orders:user:{user_id}"

    def by_status(self, status: str, shard: int) -> str:
        """Sorted set like all_orders, a shard's orders now in a status."""
        return f"{self._heads[shard]}orders:status:{status}"

    def updates(self, shard: int) -> str:
        """Stream: one entry per transition of a shard's orders, capped in length, for live
        clients and the status relay."""
        return f"{self._heads[shard]}orders:updates"

    def relay_lease(self, shard: int) -> str:
        """String with a TTL: the processor that publishes a shard's update stream to Kafka now."""
        return f"{self._heads[shard]}relay:lease"

    def relay_replicated(self, shard: int) -> str:
        """String: the last position of a shard's update stream that its relay saw on the
        replicas (`REDIS_WAIT_REPLICAS`); the relay writes it so that WAIT, which counts only
        its own connection's writes, covers the entries it read before."""
        return f"{self._heads[shard]}relay:replicated"

    def idempotency(self, user_id: int, key_digest: str) -> str:
        """String: the order an `Idempotency-Key` of a user placed, with the request's fingerprint."""
        return f"{self.prefix}idempotency:{user_id}:{key_digest}"

    def health(self, service: str) -> str:
        """String with a TTL: a service's readiness probe writes its time here (Redis takes writes)."""
        return f"{self.prefix}health:{service}"

    def rate_limit(self, principal_digest: str, window: int) -> str:
        """Counter with a TTL: requests of a principal (its SHA-256) in one rate-limit window."""
        return f"{self.prefix}ratelimit:{principal_digest}:{window}"

    def stream_ticket(self, ticket_digest: str) -> str:
        """String with a TTL: the principal a stream ticket (its SHA-256) stands for, used once."""
        return f"{self.prefix}ticket:{ticket_digest}"

    @property
    def layout(self) -> str:
        """String: the number of shards the read model was written with (fixed once data exists)."""
        return f"{self.prefix}layout:shards"
