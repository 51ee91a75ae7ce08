"""The Redis read model: every write is one atomic Redis Function, every read a round trip or two.

The functions live in one library, orders.lua (`LIBRARY`): `load_functions`
loads it at start, and the calls that concurrent tasks make at the same time
share round trips (batching.py), which also loads it again if Redis lost it.

Layout (see keys.Keys): an order hash, a history list, sorted-set indexes (all,
by user, by status) whose members all have score 0 so that they sort by order
id, which is a UUIDv7 and so sorts by creation time; and a capped stream of
updates for live clients (read through stream.UpdateStream). A function changes
the hash, the indexes, the history and the stream together, so a reader never
sees one without the others, an order is never in two status indexes, and a
replayed event changes nothing.

All of that is per shard (REDIS_SHARDS, keys.py): an order's keys, and the indexes and
stream it is in, are those of its shard, so each function touches one shard (one slot of a
Redis Cluster). Reads over every order (pages, counts, stats) ask each shard and merge:
listing.py, whose `ShardedReads` the store inherits.
"""

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, cast

import orjson
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.lock import Lock
from redis.exceptions import RedisError

from orders_contract.keys import Keys
from orders_contract.lifecycle import ALLOWED_FROM, TIME_FIELD
from orders_contract.models import HistoryEntry, Order, OrderStatus, order_json, utc_now
from orders_contract.settings import RedisSettings
from orders_readmodel.batching import ScriptBatcher, Wait, pack_with_hiredis
from orders_readmodel.listing import Index, InvalidCursor, ShardedReads, Stats, decode_cursor, encode_cursor
from orders_readmodel.stream import UpdateStream

__all__ = [
    "LIBRARY",
    "Claim",
    "Index",
    "InvalidCursor",
    "OrderStore",
    "Stats",
    "TransitionResult",
    "decode_cursor",
    "encode_cursor",
]

log = logging.getLogger(__name__)

LIBRARY = files("orders_readmodel").joinpath("orders.lua").read_text(encoding="utf-8")
"""The source of the `orders` Functions library: every function the store calls."""

_STATUSES = tuple(OrderStatus)
_TRANSITION_ARGS = {
    target: (TIME_FIELD[target], " ".join(sorted(ALLOWED_FROM[target])), *(s.value for s in _STATUSES))
    for target in OrderStatus
}
"""orders_transition's arguments that depend on the target status only."""


@dataclass(frozen=True, slots=True)
class TransitionResult:
    applied: bool
    """True when this call changed the order; False for a replay or a refused transition."""
    status: OrderStatus | None
    """The order's status after the call; None for an unknown (or abandoned) order."""
    version: int
    abandoned: bool = False
    """Creation only: the api answered 503 for this event, so it creates nothing."""
    created: bool = False
    """True when this call created the order (`create`, `start`): for `start`, the api had not
    written it through, so this call also applied PLACED."""


def _result(raw: list[Any], creation: bool = False) -> TransitionResult:
    """A function's {code, status, version[, created]} reply; `creation`: orders_create's, whose
    code 1 means it created the order (orders_start says so in a 4th element)."""
    code, status, version, *created = raw
    return TransitionResult(
        code == 1,
        OrderStatus(status) if status else None,
        int(version),
        code == -2,
        code == 1 if creation else created == [1],
    )


@dataclass(frozen=True, slots=True)
class Claim:
    """What an `Idempotency-Key` stands for: the first request's order and fingerprint."""

    order: Order
    fingerprint: str
    first: bool
    """True when this call made the claim; False when an earlier request did."""


def _pairs(fields: dict[str, Any]) -> list[str]:
    """An order's JSON form as the hash's field/value pairs (text; None fields left out)."""
    return [str(item) for name, value in fields.items() if value is not None for item in (name, value)]


class OrderStore(ShardedReads):
    """Reads and atomic writes of the read model. The client must decode responses."""

    def __init__(
        self, redis: "Redis", keys: Keys, stream_maxlen: int = 100_000, wait: Wait | None = None
    ) -> None:
        """`wait`: the replicas each pipeline's writes wait for (batching.py), None for none."""
        self.redis = redis
        self.keys = keys
        self._maxlen = stream_maxlen
        self._status_keys = [[keys.by_status(s, shard) for s in _STATUSES] for shard in range(keys.shards)]
        self.wait = wait
        self._calls = ScriptBatcher(redis, LIBRARY, wait=wait)

    @classmethod
    def connect(cls, settings: RedisSettings, timeout: float | None = None) -> "OrderStore":
        """A store on a new client of `settings.redis_url`; `timeout` bounds every command.

        The pool holds at most `redis_max_connections`; callers beyond wait for a
        free connection (up to 10 s) rather than fail. Close with `await store.redis.aclose()`.
        `redis_cluster`: redis-py's cluster client, seeded by the URL (a pool per node).
        """
        keys = Keys(settings.redis_key_prefix, settings.redis_shards)
        replicas = settings.redis_wait_replicas
        wait = Wait(replicas, settings.redis_wait_timeout_ms) if replicas else None
        if settings.redis_cluster:
            cluster = RedisCluster.from_url(
                settings.redis_url,
                max_connections=settings.redis_max_connections,
                decode_responses=True,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
            # The cluster client offers the commands the store uses, under the same names.
            return cls(cast(Redis, cluster), keys, settings.redis_stream_maxlen, wait)
        pool = BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=settings.redis_max_connections,
            timeout=10,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        redis = Redis.from_pool(pack_with_hiredis(pool))
        return cls(redis, keys, settings.redis_stream_maxlen, wait)

    async def load_functions(self) -> None:
        """Load the store's Functions library into Redis (FUNCTION LOAD REPLACE): once at start.

        A call that finds the library missing (Redis restarted empty, FUNCTION FLUSH)
        loads it and is sent again, so this is not needed for correctness; loading at
        start spares the first calls that detour, and replaces a library an older
        version of the store loaded. So a Redis that does not answer yet only gets a
        warning here: the service starts, and the first call loads the library. It also
        checks the layout (`check_layout`): a ValueError when REDIS_SHARDS changed.
        """
        try:
            await self._calls.load()
            await self.check_layout()
        except RedisError as exc:
            log.warning("cannot load the Redis functions at start-up (loaded on first use): %r", exc)

    async def create(self, order: Order, event_id: str = "", trace: str = "") -> TransitionResult:
        """Record a newly placed order; a replay returns the order's current state.

        `event_id` names the Kafka event that announced it: an event the api
        abandoned (see `abandon`) creates nothing. `trace`: the traceparent the update
        stream entry carries ('' for none).
        """
        (result,) = await self.create_all([(order, event_id)], trace=trace)
        return result

    async def create_all(
        self,
        orders: Sequence[tuple[Order, str]],
        data: Sequence[dict[str, Any]] | None = None,
        trace: str = "",
    ) -> list[TransitionResult]:
        """`create` for many (order, eventId) pairs, in one round trip (not one atomic step).

        `data`: each order's `model_dump(mode="json")`, when the caller has it already.
        """
        runs = []
        for n, (order, event_id) in enumerate(orders):
            keys, args, fields = self._creation(order, event_id, None if data is None else data[n], trace)
            runs.append(self._calls.call("orders_create", keys, [*args, *fields]))
        if len(runs) == 1:  # the api's usual call: no gathering for one
            return [_result(await runs[0], creation=True)]
        return [_result(raw, creation=True) for raw in await asyncio.gather(*runs)]

    async def start(self, order: Order, event_id: str = "", trace: str = "") -> TransitionResult:
        """`create`, then PLACED -> PROCESSING, as one atomic step and one round trip.

        The result is the transition's: applied when the order started now; else
        its status (PROCESSING or later, or CANCELLED), or `abandoned`. `created`
        when this call created the order (the api had not written it through).
        """
        keys, args, fields = self._creation(order, event_id, None, trace)
        target = OrderStatus.PROCESSING
        raw = await self._calls.call(
            "orders_start",
            [*keys, *self._status_keys[self.keys.shard_of(order.order_id)]],
            [*args, target.value, utc_now(), *_TRANSITION_ARGS[target], *fields],
        )
        return _result(raw)

    def _creation(
        self, order: Order, event_id: str, fields: dict[str, Any] | None, trace: str = ""
    ) -> tuple[list[str], list[Any], list[str]]:
        """orders_create's keys, its fixed arguments and the order's field/value pairs."""
        k = self.keys
        order_id = order.order_id
        shard = k.shard_of(order_id)
        keys = [
            k.order(order_id),
            k.history(order_id),
            k.updates(shard),
            k.all_orders(shard),
            k.by_user(order.user_id, shard),
            k.by_status(order.status, shard),
            k.abandoned(order_id),
        ]
        args = [self._maxlen, order_id, order.user_id, order.status.value, order.created_at, event_id, trace]
        return keys, args, _pairs(order.model_dump(mode="json") if fields is None else fields)

    async def transition(
        self, order_id: str, target: OrderStatus, at: str | None = None, trace: str = ""
    ) -> TransitionResult:
        """Move an order to `target` if the lifecycle allows it; otherwise change nothing.
        `trace`: the traceparent the update stream entry carries ('' for none)."""
        k, shard = self.keys, self.keys.shard_of(order_id)
        args = [self._maxlen, order_id, target.value, at or utc_now(), *_TRANSITION_ARGS[target]]
        if trace:
            args.append(trace)
        keys = [k.order(order_id), k.history(order_id), k.updates(shard), *self._status_keys[shard]]
        raw = await self._calls.call("orders_transition", keys, args)
        return _result(raw)

    async def abandon(self, events: Sequence[tuple[str, str]], ttl_s: int) -> bool:
        """Make sure no event of `events` ((orderId, eventId) pairs) ever creates its order,
        unless one of those orders exists already.

        The api calls this when Kafka did not acknowledge in time: the events
        may still land later, and this keeps its 503 true. Returns True when an
        order already exists (Kafka held the events after all), False once
        every event is abandoned. `ttl_s` must outlast any retry by the producer. The orders
        must share a shard (a batch's do: OrderDesk draws one for all).
        The function is flagged allow-oom: a full Redis (maxmemory, noeviction)
        still takes the mark; only an unreachable one cannot.
        """
        keys = [
            key
            for order_id, _ in events
            for key in (self.keys.order(order_id), self.keys.abandoned(order_id))
        ]
        return bool(
            await self._calls.call("orders_abandon", keys, [ttl_s, *(event_id for _, event_id in events)])
        )

    async def claim(self, key: str, order: Order, fingerprint: str, ttl_s: int) -> Claim:
        """Tie an `Idempotency-Key` of `order`'s user to `order`, unless an earlier request did.

        Atomic, so of any number of concurrent requests with one key
        exactly one claims it and all get the same order back.
        """
        digest = hashlib.sha256(key.encode()).hexdigest()
        value = orjson.dumps({"fingerprint": fingerprint, "order": order.model_dump(mode="json")})
        name = self.keys.idempotency(order.user_id, digest)
        previous = cast(str | None, await self._calls.call("orders_claim", [name], [value, ttl_s]))
        if previous is None:
            return Claim(order, fingerprint, first=True)
        stored = orjson.loads(previous)
        return Claim(Order.model_validate(stored["order"]), stored["fingerprint"], first=False)

    async def check_writes(self, service: str, ttl_ms: int = 10_000) -> None:
        """Readiness: one small write (`service`'s time under keys.health, expiring after
        `ttl_ms`). Raises the RedisError of a Redis that refuses writes: full (OOM), a
        read-only replica, loading; a PING would answer in all those cases."""
        await self.redis.set(self.keys.health(service), utc_now(), px=ttl_ms)

    def stream(self, shard: int = 0) -> UpdateStream:
        """The reads of a shard's update stream, on the store's client."""
        return UpdateStream(self.redis, self.keys, shard)

    async def check_layout(self) -> None:
        """Record the number of shards the read model is written with, or refuse (ValueError)
        a number other than the one its data was written with: its orders would be looked for
        in the wrong shards. Data of one shard from before the count was recorded (untagged
        index or stream under the prefix) counts as written with 1."""
        name = self.keys.layout
        recorded = cast(str | None, await self.redis.set(name, self.keys.shards, nx=True, get=True))
        if recorded is None and self.keys.shards > 1:
            old = Keys(self.keys.prefix)
            if any([await self.redis.exists(n) for n in (old.all_orders(0), old.updates(0))]):
                await self.redis.set(name, 1)
                recorded = "1"
        if recorded is not None and int(recorded) != self.keys.shards:
            raise ValueError(
                f"the read model was written with REDIS_SHARDS={recorded}, not {self.keys.shards}: "
                "set it back, or rebuild into an empty Redis (make rebuild)"
            )

    def lease(self, key: str, timeout_s: float) -> Lock:
        """A lease on `key`: a Redis lock that lasts `timeout_s` unless renewed, held by no
        thread in particular (acquire, reacquire, release)."""
        return self.redis.lock(key, timeout=timeout_s, thread_local=False)

    async def holds_orders(self) -> bool:
        """Whether the read model has orders or an update stream in any shard (a rebuild wants
        neither)."""
        k = self.keys
        names = [name for shard in range(k.shards) for name in (k.all_orders(shard), k.updates(shard))]
        return any(await asyncio.gather(*(self._calls.command("EXISTS", name) for name in names)))

    async def restore_all(self, events: Sequence[tuple[Order, str, str]]) -> list[int | None]:
        """The rebuild's writes (orders_restore): for each (order after a transition, the
        transition's time, its original stream position), in order and in one round trip, the
        order's hash, indexes and history entry. Per event: the order's version before it
        (0: a new order), or None for a repeat (a version not above the order's), which
        changed nothing. The library must be loaded (`load_functions`)."""
        if not events:
            return []
        statuses = [s.value for s in _STATUSES]
        async with self.redis.pipeline(transaction=False) as pipe:
            for order, at, position in events:
                k, order_id = self.keys, order.order_id
                shard = k.shard_of(order_id)
                keys = [
                    k.order(order_id),
                    k.history(order_id),
                    k.all_orders(shard),
                    k.by_user(order.user_id, shard),
                ]
                keys += self._status_keys[shard]
                args = [order_id, order.status.value, order.version, at, position, *statuses]
                args += _pairs(order.model_dump(mode="json"))
                pipe.execute_command("FCALL", "orders_restore", len(keys), *keys, *args)
            replies = await pipe.execute()
        return [int(before) if applied == 1 else None for applied, before in replies]

    async def restore_stream(self, order_id: str, position: str, at: str) -> None:
        """The rebuild's last step (orders_restore_stream) in each shard: its update stream begun
        with the newest transition rebuilt, `order_id`'s at `at`, under its original `position`."""
        keys = [self.keys.order(order_id), self.keys.updates(self.keys.shard_of(order_id))]
        await self._calls.call("orders_restore_stream", keys, [order_id, position, at])

    async def get(self, order_id: str) -> Order | None:
        fields = await self._calls.command("HGETALL", self.keys.order(order_id))
        return Order.model_validate(fields) if fields else None

    async def get_json(self, order_id: str) -> dict[str, Any] | None:
        """The order in its JSON form (as `get(...).model_dump(mode="json")`), for read paths."""
        fields = await self._calls.command("HGETALL", self.keys.order(order_id))
        return order_json(fields) if fields else None

    async def history(self, order_id: str) -> list[HistoryEntry]:
        entries = await self._calls.command("LRANGE", self.keys.history(order_id), 0, -1)
        return [HistoryEntry.model_validate_json(entry) for entry in entries]
