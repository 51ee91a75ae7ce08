"""The Redis read model: every write is one atomic Lua script, every read a single round trip.

Scripts that concurrent tasks run at the same time share round trips (batching.py).

Layout (see keys.Keys): an order hash, a history list, sorted-set indexes (all,
by user, by status) whose members all have score 0 so that they sort by order
id, which is a UUIDv7 and so sorts by creation time; and a capped stream of
updates for live clients. A script changes the hash, the indexes, the history
and the stream together, so a reader never sees one without the others, an
order is never in two status indexes, and a replayed event changes nothing.
"""

import asyncio
import base64
import binascii
import hashlib
import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson
from redis.asyncio import BlockingConnectionPool, Redis

from .batching import ScriptBatcher, pack_with_hiredis
from .keys import Keys
from .lifecycle import ALLOWED_FROM, TIME_FIELD
from .models import HistoryEntry, Order, OrderStatus, order_json, utc_now
from .settings import RedisSettings

__all__ = [
    "START",
    "Claim",
    "InvalidCursor",
    "InvalidPosition",
    "OrderStore",
    "Snapshot",
    "Stats",
    "TransitionResult",
    "Update",
    "position_key",
]

log = logging.getLogger(__name__)

_HASH_JSON = """
-- A hash as a JSON object of its fields (text values): '{}' when there is no such hash.
local function hash_json(key)
  local fields = redis.call('HGETALL', key)
  local object = {}
  for i = 1, #fields, 2 do object[fields[i]] = fields[i + 1] end
  return cjson.encode(object)
end
"""

_FUNCTIONS = (
    _HASH_JSON
    + """
-- k: an order's keys {hash, history list, update stream, all-orders index, its user's index,
-- its first status's index, its abandoned event ids}; index: status name -> that status's index.
-- Each function returns {code, status, version}.

-- Appends a transition to the update stream, with the order as it is now, and to the
-- history, with the stream entry's id.
local function record(k, maxlen, order_id, user_id, status, version, at)
  local position = redis.call('XADD', k[3], 'MAXLEN', '~', maxlen, '*', 'orderId', order_id,
             'userId', user_id, 'status', status, 'version', version, 'at', at,
             'order', hash_json(k[1]))
  redis.call('RPUSH', k[2],
             cjson.encode({status = status, at = at, version = version, position = position}))
end

-- Creates an order unless it exists (code 0, its current status) or the event announcing
-- it was abandoned (code -2); fields: the hash's field/value pairs.
local function create(k, maxlen, order_id, user_id, status, at, event_id, fields)
  if redis.call('EXISTS', k[1]) == 1 then
    local cur = redis.call('HMGET', k[1], 'status', 'version')
    return {0, cur[1], tonumber(cur[2])}
  end
  if event_id ~= '' and redis.call('SISMEMBER', k[7], event_id) == 1 then
    return {-2, false, 0}
  end
  redis.call('HSET', k[1], unpack(fields))
  redis.call('ZADD', k[4], 0, order_id)
  redis.call('ZADD', k[5], 0, order_id)
  redis.call('ZADD', k[6], 0, order_id)
  record(k, maxlen, order_id, user_id, status, 1, at)
  return {1, status, 1}
end

-- Moves an order to target if the lifecycle allows it from its current status (sources,
-- space separated): code 1 applied, 0 not allowed (or already applied), -1 unknown order.
-- time_field: the hash field that records when.
local function transition(k, index, maxlen, order_id, target, at, time_field, sources)
  local cur = redis.call('HMGET', k[1], 'status', 'version', 'userId')
  local status, version = cur[1], tonumber(cur[2])
  if not status then return {-1, false, 0} end
  if not string.find(' ' .. sources .. ' ', ' ' .. status .. ' ', 1, true) then
    return {0, status, version}
  end
  version = version + 1
  redis.call('HSET', k[1], 'status', target, 'version', version, time_field, at)
  redis.call('ZREM', index[status], order_id)
  redis.call('ZADD', index[target], 0, order_id)
  record(k, maxlen, order_id, cur[3], target, version, at)
  return {1, target, version}
end

-- The status indexes: KEYS from `first` on, named in the same order by ARGV from `names` on.
local function indexes(first, names, count)
  local index = {}
  for i = 0, count - 1 do index[ARGV[names + i]] = KEYS[first + i] end
  return index
end
"""
)

CREATE_SCRIPT = (
    _FUNCTIONS
    + """
-- KEYS[1..7] the order's keys (see k above)
-- ARGV[1] stream cap, ARGV[2] orderId, ARGV[3] userId, ARGV[4] status, ARGV[5] time,
-- ARGV[6] the id of the event announcing the order ('' when none), ARGV[7..] field/value pairs
return create(KEYS, ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], {unpack(ARGV, 7)})
"""
)

TRANSITION_SCRIPT = (
    _FUNCTIONS
    + """
-- KEYS[1] order hash, KEYS[2] history list, KEYS[3] update stream, KEYS[4..] status indexes
-- ARGV[1] stream cap, ARGV[2] orderId, ARGV[3] target status, ARGV[4] time,
-- ARGV[5] the hash field that records the time, ARGV[6] allowed sources, space separated,
-- ARGV[7..] the statuses the indexes are of
local index = indexes(4, 7, #KEYS - 3)
return transition(KEYS, index, ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
"""
)

START_SCRIPT = (
    _FUNCTIONS
    + """
-- The processor's first step on an order, one round trip: create it unless it is there
-- (normally it is: the api writes it through), then start it (PLACED -> PROCESSING).
-- KEYS[1..7] the order's keys, KEYS[8..] status indexes
-- ARGV[1..6] as the create script's, ARGV[7] target status, ARGV[8] time, ARGV[9] time field,
-- ARGV[10] allowed sources, ARGV[11..] the statuses the indexes are of, then field/value pairs
-- Returns {-2, false, 0} for an abandoned event, else what the transition returns.
local count = #KEYS - 7
local created = create(KEYS, ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6],
                       {unpack(ARGV, 11 + count)})
if created[1] == -2 then return created end
return transition(KEYS, indexes(8, 11, count), ARGV[1], ARGV[2], ARGV[7], ARGV[8], ARGV[9], ARGV[10])
"""
)

ABANDON_SCRIPT = """
-- The api gave up waiting for Kafka to acknowledge events: unless one of their orders
-- already exists (then Kafka held them after all), make sure none of them is ever applied.
-- All or nothing, for the events of one batch (a Kafka transaction) as for a single one.
-- KEYS: per order, its hash and its abandoned-event set; ARGV[1] ttl, ARGV[2..] event ids
-- Returns 1 when an order exists, 0 when every event is now abandoned.
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 1 end
end
for i = 1, #KEYS, 2 do
  redis.call('SADD', KEYS[i + 1], ARGV[(i + 1) / 2 + 1])
  redis.call('EXPIRE', KEYS[i + 1], ARGV[1])
end
return 0
"""

CLAIM_SCRIPT = """
-- KEYS[1] the Idempotency-Key's record; ARGV[1] this request's record, ARGV[2] ttl
-- Returns the record already there, or nil once this one is stored (SET NX GET, as one step).
local previous = redis.call('GET', KEYS[1])
if previous then return previous end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
"""

PAGE_SCRIPT = (
    _HASH_JSON
    + """
-- One page of an index, newest first, with each order's fields: one round trip.
-- KEYS[1] the index; ARGV[1] where to start ('+', or '(' and the last id of the previous page),
-- ARGV[2] how many, ARGV[3] the order hashes' key prefix
-- Returns {id, its hash as JSON, id, ...}: a string an order is cheaper to read than a list.
local ids = redis.call('ZRANGE', KEYS[1], ARGV[1], '-', 'BYLEX', 'REV', 'LIMIT', 0, ARGV[2])
local page = {}
for _, id in ipairs(ids) do
  page[#page + 1] = id
  page[#page + 1] = hash_json(ARGV[3] .. id)
end
return page
"""
)

_STATUSES = tuple(OrderStatus)
_TRANSITION_ARGS = {
    target: (TIME_FIELD[target], " ".join(sorted(ALLOWED_FROM[target])), *(s.value for s in _STATUSES))
    for target in OrderStatus
}
"""The transition script's arguments that depend on the target status only."""


class InvalidCursor(ValueError):
    """A pagination cursor that this service did not hand out."""


class InvalidPosition(ValueError):
    """Not a position in the update stream (a Redis stream entry id)."""


START = "0-0"
"""The position before the first entry of the update stream."""


_POSITION = re.compile(r"(\d{1,20})(?:-(\d{1,20}))?", re.ASCII)
_MAX_PART = 2**64 - 1


def _head(newest: Any) -> str:
    """The position of an XREVRANGE ... COUNT 1 reply: the newest entry's, START when empty."""
    return str(newest[0][0]) if newest else START


def position_key(position: str) -> tuple[int, int]:
    """A stream position (`<ms>-<seq>`, each part below 2**64) as a pair that compares like
    the positions do; InvalidPosition for anything else."""
    match = _POSITION.fullmatch(position)
    key = (int(match[1]), int(match[2] or 0)) if match else (-1, -1)
    if not (0 <= key[0] <= _MAX_PART and 0 <= key[1] <= _MAX_PART):
        raise InvalidPosition(f"{position!r} is not a stream position")
    return key


@dataclass(frozen=True, slots=True)
class Update:
    """One entry of the update stream: a transition and the order as it was right after it."""

    position: str
    order_id: str
    user_id: int
    status: OrderStatus
    version: int
    order_text: str | None
    """The order's hash right after the transition, as JSON text (read it as `data`); None
    only for entries written before the stream carried the order."""

    @property
    def data(self) -> dict[str, Any]:
        """The order in the API's JSON form as of this transition (the transition's own
        fields only, for an entry without the order, or whose order cannot be read: only
        our scripts write the stream, so never). Decoded when asked: a hub that nobody
        listens to reads every entry but decodes none."""
        if self.order_text:
            try:
                return order_json(orjson.loads(self.order_text))
            except (ValueError, TypeError, AttributeError) as exc:  # not JSON, not an object, bad field
                log.warning("update %s carries an unreadable order (sent without it): %r", self.position, exc)
        return {
            "orderId": self.order_id,
            "userId": self.user_id,
            "status": self.status,
            "version": self.version,
        }


def _updates(entries: list[tuple[str, dict[str, str]]]) -> list[Update]:
    """Stream entries as updates; an entry that is not a transition is skipped, with a warning."""
    updates = []
    for position, fields in entries:
        try:
            updates.append(
                Update(
                    position,
                    fields["orderId"],
                    int(fields["userId"]),
                    OrderStatus(fields["status"]),
                    int(fields["version"]),
                    fields.get("order"),
                )
            )
        except (KeyError, ValueError) as exc:
            log.warning("update stream entry %s is not a transition (skipped): %r", position, exc)
    return updates


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An order read together with the stream's positions, in one atomic step."""

    order: Order | None
    position: str | None
    """The stream entry of the order's latest transition (None for an unknown order)."""
    head: str
    """The stream's newest entry when the order was read: every later transition comes after it."""


@dataclass(frozen=True, slots=True)
class Stats:
    counts: dict[OrderStatus, int]
    per_second: list[int]
    """Orders created in each second from `since_ms` on (by the time in their UUIDv7 ids)."""
    head: str


@dataclass(frozen=True, slots=True)
class TransitionResult:
    applied: bool
    """True when this call changed the order; False for a replay or a refused transition."""
    status: OrderStatus | None
    """The order's status after the call; None for an unknown (or abandoned) order."""
    version: int
    abandoned: bool = False
    """Creation only: the api answered 503 for this event, so it creates nothing."""


def _result(raw: list[Any]) -> TransitionResult:
    code, status, version = raw
    return TransitionResult(code == 1, OrderStatus(status) if status else None, int(version), code == -2)


@dataclass(frozen=True, slots=True)
class Claim:
    """What an `Idempotency-Key` stands for: the first request's order and fingerprint."""

    order: Order
    fingerprint: str
    first: bool
    """True when this call made the claim; False when an earlier request did."""


def encode_cursor(order_id: str) -> str:
    return base64.urlsafe_b64encode(uuid.UUID(order_id).bytes).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return str(uuid.UUID(bytes=raw))
    except (ValueError, binascii.Error):
        raise InvalidCursor("cursor is not one this service handed out") from None


class OrderStore:
    """Reads and atomic writes of the read model. The client must decode responses."""

    def __init__(self, redis: "Redis", keys: Keys, stream_maxlen: int = 100_000) -> None:
        self.redis = redis
        self.keys = keys
        self._maxlen = stream_maxlen
        self._create = redis.register_script(CREATE_SCRIPT)
        self._transition = redis.register_script(TRANSITION_SCRIPT)
        self._start = redis.register_script(START_SCRIPT)
        self._status_keys = [keys.by_status(status) for status in _STATUSES]
        self._abandon = redis.register_script(ABANDON_SCRIPT)
        self._page = redis.register_script(PAGE_SCRIPT)
        self._claim = redis.register_script(CLAIM_SCRIPT)
        self._scripts = ScriptBatcher(redis)

    @classmethod
    def connect(cls, settings: RedisSettings, timeout: float | None = None) -> "OrderStore":
        """A store on a new client of `settings.redis_url`; `timeout` bounds every command.

        The pool holds at most `redis_max_connections`; callers beyond wait for a
        free connection (up to 10 s) rather than fail. Close with `await store.redis.aclose()`.
        """
        pool = BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=settings.redis_max_connections,
            timeout=10,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        redis = Redis.from_pool(pack_with_hiredis(pool))
        return cls(redis, Keys(settings.redis_key_prefix), settings.redis_stream_maxlen)

    async def create(self, order: Order, event_id: str = "") -> TransitionResult:
        """Record a newly placed order; a replay returns the order's current state.

        `event_id` names the Kafka event that announced it: an event the api
        abandoned (see `abandon`) creates nothing.
        """
        (result,) = await self.create_all([(order, event_id)])
        return result

    async def create_all(
        self, orders: Sequence[tuple[Order, str]], data: Sequence[dict[str, Any]] | None = None
    ) -> list[TransitionResult]:
        """`create` for many (order, eventId) pairs, in one round trip (not one atomic step).

        `data`: each order's `model_dump(mode="json")`, when the caller has it already.
        """
        runs = []
        for n, (order, event_id) in enumerate(orders):
            keys, args, fields = self._creation(order, event_id, None if data is None else data[n])
            runs.append(self._scripts.run(self._create, keys, [*args, *fields]))
        if len(runs) == 1:  # the api's usual call: no gathering for one
            return [_result(await runs[0])]
        return [_result(raw) for raw in await asyncio.gather(*runs)]

    async def start(self, order: Order, event_id: str = "") -> TransitionResult:
        """`create`, then PLACED -> PROCESSING, as one atomic step and one round trip.

        The result is the transition's: applied when the order started now; else
        its status (PROCESSING or later, or CANCELLED), or `abandoned`.
        """
        keys, args, fields = self._creation(order, event_id, None)
        target = OrderStatus.PROCESSING
        raw = await self._scripts.run(
            self._start,
            [*keys, *self._status_keys],
            [*args, target.value, utc_now(), *_TRANSITION_ARGS[target], *fields],
        )
        return _result(raw)

    def _creation(
        self, order: Order, event_id: str, fields: dict[str, Any] | None
    ) -> tuple[list[str], list[Any], list[str]]:
        """The create script's keys, its fixed arguments and the order's field/value pairs."""
        k = self.keys
        order_id = order.order_id
        keys = [
            k.order(order_id),
            k.history(order_id),
            k.updates,
            k.all_orders,
            k.by_user(order.user_id),
            k.by_status(order.status),
            k.abandoned(order_id),
        ]
        args = [self._maxlen, order_id, order.user_id, order.status.value, order.created_at, event_id]
        if fields is None:
            fields = order.model_dump(mode="json")
        pairs = [str(item) for name, value in fields.items() if value is not None for item in (name, value)]
        return keys, args, pairs

    async def transition(self, order_id: str, target: OrderStatus, at: str | None = None) -> TransitionResult:
        """Move an order to `target` if the lifecycle allows it; otherwise change nothing."""
        k = self.keys
        raw = await self._scripts.run(
            self._transition,
            [k.order(order_id), k.history(order_id), k.updates, *self._status_keys],
            [self._maxlen, order_id, target.value, at or utc_now(), *_TRANSITION_ARGS[target]],
        )
        return _result(raw)

    async def abandon(self, events: Sequence[tuple[str, str]], ttl_s: int) -> bool:
        """Make sure no event of `events` ((orderId, eventId) pairs) ever creates its order,
        unless one of those orders exists already.

        The api calls this when Kafka did not acknowledge in time: the events
        may still land later, and this keeps its 503 true. Returns True when an
        order already exists (Kafka held the events after all), False once
        every event is abandoned. `ttl_s` must outlast any retry by the producer.
        """
        keys = [
            key
            for order_id, _ in events
            for key in (self.keys.order(order_id), self.keys.abandoned(order_id))
        ]
        return bool(
            await self._scripts.run(self._abandon, keys, [ttl_s, *(event_id for _, event_id in events)])
        )

    async def claim(self, key: str, order: Order, fingerprint: str, ttl_s: int) -> Claim:
        """Tie an `Idempotency-Key` of `order`'s user to `order`, unless an earlier request did.

        Atomic, so of any number of concurrent requests with one key
        exactly one claims it and all get the same order back.
        """
        digest = hashlib.sha256(key.encode()).hexdigest()
        value = orjson.dumps({"fingerprint": fingerprint, "order": order.model_dump(mode="json")})
        name = self.keys.idempotency(order.user_id, digest)
        previous = cast(str | None, await self._scripts.run(self._claim, [name], [value, ttl_s]))
        if previous is None:
            return Claim(order, fingerprint, first=True)
        stored = orjson.loads(previous)
        return Claim(Order.model_validate(stored["order"]), stored["fingerprint"], first=False)

    async def get(self, order_id: str) -> Order | None:
        fields = await self._scripts.command("HGETALL", self.keys.order(order_id))
        return Order.model_validate(fields) if fields else None

    async def get_json(self, order_id: str) -> dict[str, Any] | None:
        """The order in its JSON form (as `get(...).model_dump(mode="json")`), for read paths."""
        fields = await self._scripts.command("HGETALL", self.keys.order(order_id))
        return order_json(fields) if fields else None

    async def page(
        self, index: str, limit: int, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Orders of an index, newest first, in their JSON form: one page and the cursor of
        the next (None if last). One round trip."""
        start = f"({decode_cursor(cursor)}" if cursor else "+"
        raw = await self._scripts.run(self._page, [index], [start, limit + 1, self.keys.order("")])
        ids: list[str] = raw[::2]
        more = len(ids) > limit
        orders = [order_json(row) for row in map(orjson.loads, raw[1 : 2 * limit : 2]) if row]
        return orders, encode_cursor(ids[limit - 1]) if more else None

    async def history(self, order_id: str) -> list[HistoryEntry]:
        entries = await self._scripts.command("LRANGE", self.keys.history(order_id), 0, -1)
        return [HistoryEntry.model_validate_json(entry) for entry in entries]

    async def head(self) -> str:
        """The position of the stream's newest entry (START when it is empty)."""
        return _head(await self.redis.xrevrange(self.keys.updates, count=1))

    async def snapshot(self, order_id: str) -> Snapshot:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.order(order_id))
            pipe.lindex(self.keys.history(order_id), -1)
            pipe.xrevrange(self.keys.updates, count=1)
            fields, last, newest = await pipe.execute()
        entry = HistoryEntry.model_validate_json(last) if last else None
        head = _head(newest)
        order = Order.model_validate(fields) if fields else None
        return Snapshot(order, (entry.position or head) if entry else None, head)

    async def updates_after(self, after: str, until: str = "+", count: int = 500) -> list[Update] | None:
        """Up to `count` entries after `after`, up to `until` included, oldest first.

        None when the stream can no longer give everything after `after`: it was
        trimmed past that position (the cap), or `after` is ahead of the stream.
        """
        after_key = position_key(after)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xinfo_stream(self.keys.updates)
            pipe.xrange(self.keys.updates, f"({after}", until, count=count)
            info, entries = await pipe.execute(raise_on_error=False)
        if isinstance(info, Exception):  # no stream yet
            return [] if after_key == position_key(START) else None
        if after_key > position_key(str(info["last-generated-id"])):
            return None
        first = info.get("first-entry")
        trimmed = int(info.get("entries-added", -1)) != int(info["length"])
        if trimmed and first and position_key(str(first[0])) > after_key:
            return None
        if isinstance(entries, Exception):
            raise entries
        return _updates(entries)

    async def wait_updates(self, after: str, count: int = 500, block_ms: int = 5000) -> list[Update]:
        """Entries after `after`, waiting up to `block_ms` for one (needs a connection of its own)."""
        answer: Any = await self.redis.xread({self.keys.updates: after}, count=count, block=block_ms)
        if not answer:
            return []
        _, entries = answer[0]  # RESP2: [[stream, entries]]
        return _updates(entries)

    async def stats(self, since_ms: int, seconds: int) -> Stats:
        """Orders per status, orders created per second since `since_ms`, and the stream's head."""
        k = self.keys

        def bound(ms: int) -> str:  # ids with a smaller time sort before it
            prefix = f"{ms:012x}"
            return f"{prefix[:8]}-{prefix[8:]}"

        async with self.redis.pipeline(transaction=True) as pipe:
            for status in _STATUSES:
                pipe.zcard(k.by_status(status))
            for i in range(seconds):
                start = since_ms + i * 1000
                pipe.zlexcount(k.all_orders, f"[{bound(start)}", f"({bound(start + 1000)}")
            pipe.xrevrange(k.updates, count=1)
            *numbers, newest = await pipe.execute()
        counts = dict(zip(_STATUSES, (int(n) for n in numbers[: len(_STATUSES)]), strict=True))
        per_second = [int(n) for n in numbers[len(_STATUSES) :]]
        return Stats(counts, per_second, _head(newest))
