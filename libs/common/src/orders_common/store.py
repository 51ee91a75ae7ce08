"""The Redis read model: every write is one atomic Lua script, every read a single round trip.

Layout (see keys.Keys): an order hash, a history list, sorted-set indexes (all,
by user, by status) whose members all have score 0 so that they sort by order
id, which is a UUIDv7 and so sorts by creation time; and a capped stream of
updates for live clients. A script changes the hash, the indexes, the history
and the stream together, so a reader never sees one without the others, an
order is never in two status indexes, and a replayed event changes nothing.
"""

import base64
import binascii
import uuid
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis

from .keys import Keys
from .lifecycle import ALLOWED_FROM, TIME_FIELD
from .models import HistoryEntry, Order, OrderStatus, utc_now

__all__ = ["InvalidCursor", "OrderStore", "TransitionResult"]

_RECORD = """
local function record(history, updates, maxlen, order_id, user_id, status, version, at)
  redis.call('RPUSH', history, cjson.encode({status = status, at = at, version = version}))
  redis.call('XADD', updates, 'MAXLEN', '~', maxlen, '*', 'orderId', order_id,
             'userId', user_id, 'status', status, 'version', version, 'at', at)
end
"""

CREATE_SCRIPT = (
    _RECORD
    + """
-- Create an order unless it exists.
-- KEYS[1] order hash, KEYS[2] history list, KEYS[3] update stream,
-- KEYS[4] all-orders index, KEYS[5] the user's index, KEYS[6] the status index
-- ARGV[1] orderId, ARGV[2] userId, ARGV[3] status, ARGV[4] time, ARGV[5] stream cap,
-- ARGV[6..] the order's field/value pairs
-- Returns {1 created or 0 already there, status, version}.
if redis.call('EXISTS', KEYS[1]) == 1 then
  local cur = redis.call('HMGET', KEYS[1], 'status', 'version')
  return {0, cur[1], tonumber(cur[2])}
end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('ZADD', KEYS[4], 0, ARGV[1])
redis.call('ZADD', KEYS[5], 0, ARGV[1])
redis.call('ZADD', KEYS[6], 0, ARGV[1])
record(KEYS[2], KEYS[3], ARGV[5], ARGV[1], ARGV[2], ARGV[3], 1, ARGV[4])
return {1, ARGV[3], 1}
"""
)

TRANSITION_SCRIPT = (
    _RECORD
    + """
-- Move an order to a status if the lifecycle allows it from the current one.
-- KEYS[1] order hash, KEYS[2] history list, KEYS[3] update stream,
-- KEYS[4..] the status indexes, named in the same order by ARGV[7..]
-- ARGV[1] orderId, ARGV[2] target status, ARGV[3] time, ARGV[4] stream cap,
-- ARGV[5] the hash field that records the time, ARGV[6] allowed sources, space separated
-- Returns {1 applied, 0 not allowed (or already applied), -1 unknown order; status; version}.
local cur = redis.call('HMGET', KEYS[1], 'status', 'version', 'userId')
local status, version = cur[1], tonumber(cur[2])
if not status then return {-1, false, 0} end
if not string.find(' ' .. ARGV[6] .. ' ', ' ' .. status .. ' ', 1, true) then
  return {0, status, version}
end
local index = {}
for i = 7, #ARGV do index[ARGV[i]] = KEYS[i - 3] end
version = version + 1
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'version', version, ARGV[5], ARGV[3])
redis.call('ZREM', index[status], ARGV[1])
redis.call('ZADD', index[ARGV[2]], 0, ARGV[1])
record(KEYS[2], KEYS[3], ARGV[4], ARGV[1], cur[3], ARGV[2], version, ARGV[3])
return {1, ARGV[2], version}
"""
)

_STATUSES = tuple(OrderStatus)


class InvalidCursor(ValueError):
    """A pagination cursor that this service did not hand out."""


@dataclass(frozen=True, slots=True)
class TransitionResult:
    applied: bool
    """True when this call changed the order; False for a replay or a refused transition."""
    status: OrderStatus | None
    """The order's status after the call; None for an unknown order."""
    version: int


def _result(raw: list[Any]) -> TransitionResult:
    code, status, version = raw
    return TransitionResult(code == 1, OrderStatus(status) if status else None, int(version))


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

    async def create(self, order: Order) -> TransitionResult:
        """Record a newly placed order; a replay returns the order's current state."""
        k = self.keys
        fields = order.model_dump(mode="json", exclude_none=True)
        pairs = [str(item) for pair in fields.items() for item in pair]
        raw = await self._create(
            keys=[
                k.order(order.order_id),
                k.history(order.order_id),
                k.updates,
                k.all_orders,
                k.by_user(order.user_id),
                k.by_status(order.status),
            ],
            args=[
                order.order_id,
                order.user_id,
                order.status.value,
                order.created_at,
                self._maxlen,
                *pairs,
            ],
        )
        return _result(raw)

    async def transition(self, order_id: str, target: OrderStatus, at: str | None = None) -> TransitionResult:
        """Move an order to `target` if the lifecycle allows it; otherwise change nothing."""
        k = self.keys
        raw = await self._transition(
            keys=[
                k.order(order_id),
                k.history(order_id),
                k.updates,
                *(k.by_status(s) for s in _STATUSES),
            ],
            args=[
                order_id,
                target.value,
                at or utc_now(),
                self._maxlen,
                TIME_FIELD[target],
                " ".join(sorted(ALLOWED_FROM[target])),
                *(s.value for s in _STATUSES),
            ],
        )
        return _result(raw)

    async def get(self, order_id: str) -> Order | None:
        fields = await self.redis.hgetall(self.keys.order(order_id))
        return Order.model_validate(fields) if fields else None

    async def page(self, index: str, limit: int, cursor: str | None = None) -> tuple[list[Order], str | None]:
        """Orders of an index, newest first: one page and the cursor of the next (None if last)."""
        start = f"({decode_cursor(cursor)}" if cursor else "+"
        ids = cast(
            list[str],
            await self.redis.zrange(index, start, "-", desc=True, bylex=True, offset=0, num=limit + 1),
        )
        more = len(ids) > limit
        ids = ids[:limit]
        if not ids:
            return [], None
        async with self.redis.pipeline(transaction=False) as pipe:
            for order_id in ids:
                pipe.hgetall(self.keys.order(order_id))
            rows = await pipe.execute()
        orders = [Order.model_validate(row) for row in rows if row]
        return orders, encode_cursor(ids[-1]) if more else None

    async def history(self, order_id: str) -> list[HistoryEntry]:
        entries = await self.redis.lrange(self.keys.history(order_id), 0, -1)
        return [HistoryEntry.model_validate_json(entry) for entry in entries]
