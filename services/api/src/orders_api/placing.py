"""The api's protocol of placing and cancelling orders between Kafka and Redis, with typed results.

No HTTP here: the routes (`routes/orders.py`) parse the request, call `OrderDesk` and map its
result to their answer. What the protocol keeps true:

- **Never placed unless Kafka holds it.** `Placed` (and `BatchPlaced`) come only after Kafka's
  acknowledgment of the order (every in-sync replica), or the commit of the batch's transaction;
  a batch is all or nothing. A batch of one goes through the plain idempotent producer.
- **An unavailable answer never becomes an order later.** When Kafka does not acknowledge in
  time the event may still land (the producer keeps retrying it). Before `Unavailable`, the
  events are marked abandoned in Redis, atomically against their orders' existence: the
  processor then never applies them. If an order exists already, Kafka held the events after
  all and the result is `Placed`. If the mark cannot be written (Redis unreachable), that is
  logged: the documented limit of the promise.
- **Idempotency.** With a key, the first request claims it in Redis (atomically: of concurrent
  requests exactly one wins) with its order and the fingerprint of its body (SHA-256 of the
  request's JSON). A later request with the same key and body gets that same order (`Placed`
  with `replayed`: the order as it is now if Redis has it, else the claimed order published
  again under a new event id); a different body is `KeyReused`. A key belongs to the order's
  user and to its owner (the caller's identity; '' when there is none).

Two decisions a reader would otherwise have to reverse-engineer:

1. **Write-through.** Once Kafka holds an order, the api writes it to Redis itself (the same
   `create` the processor calls, under the same event id), so the `Location` it answers with
   can be read at once. The processor's later write of that order is then a no-op (a replayed
   creation changes nothing). If this write fails it is only logged: Kafka holds the order,
   and the processor writes it.
2. **Kafka is the source of truth for placing an order, but a notification for a cancel.** A
   placed order exists because Kafka holds `order.placed`. A cancel is decided in Redis by the
   api, in one atomic step PLACED -> CANCELLED, so the processor can never overtake it; only
   then is `order.cancelled` published, and the processor, replaying it, changes nothing. A
   cancel whose event Kafka does not take is still a cancel (`Cancelled` with `published`
   False).
"""

import hashlib
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import SpanKind
from redis.exceptions import RedisError

from orders_contract.events import encode_cancelled, encode_placed
from orders_contract.models import Order, OrderCreate, OrderStatus, new_order_id
from orders_kafka.clients import record_headers
from orders_readmodel.store import OrderStore
from orders_runtime import tracing
from orders_runtime.logs import ORDER_ID
from orders_web.http import redis_error_text

from .publisher import KafkaUnavailable, Publisher
from .settings import Settings

__all__ = [
    "BatchPlaced",
    "Cancelled",
    "KeyReused",
    "NotFound",
    "OrderDesk",
    "Placed",
    "TooLate",
    "Unavailable",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Placed:
    """Kafka holds the order. `data` is its JSON form (`order.model_dump(mode="json")`);
    `replayed` when an Idempotency-Key returned an earlier request's order."""

    order: Order
    data: dict[str, Any]
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class BatchPlaced:
    """Kafka holds every order of the batch (committed in one transaction), in request order."""

    orders: list[Placed]


@dataclass(frozen=True, slots=True)
class KeyReused:
    """The Idempotency-Key was already used for a different order: nothing was placed."""


@dataclass(frozen=True, slots=True)
class Unavailable:
    """Kafka did not take the order(s) in time, and none will ever be applied (`reason`: why)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The order is CANCELLED: by this call when `applied`, else by an earlier one.
    `published`: this call's `order.cancelled` is in Kafka (False when nothing was applied, or
    Kafka did not take it: the cancel stands either way)."""

    order: Order
    applied: bool
    published: bool = False


@dataclass(frozen=True, slots=True)
class NotFound:
    """No such order (or it was abandoned)."""


@dataclass(frozen=True, slots=True)
class TooLate:
    """The order is `status` (PROCESSING or final): it can no longer be cancelled."""

    status: OrderStatus


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """One order on its way to Kafka and the read model: its JSON form is made once, for the
    event, the write-through and the answer; `event_id` names this publication of it."""

    order: Order
    data: dict[str, Any]
    event_id: str

    @classmethod
    def of(cls, order: Order) -> "_Outgoing":
        return cls(order, order.model_dump(mode="json"), new_order_id())


def _fingerprint(request: OrderCreate) -> str:
    """What an Idempotency-Key's claim remembers of the request's body."""
    return hashlib.sha256(request.model_dump_json().encode()).hexdigest()


class OrderDesk:
    """Places, batches and cancels orders on the api's store and publisher."""

    __slots__ = ("_publisher", "_settings", "_store")

    def __init__(self, store: OrderStore, publisher: Publisher, settings: Settings) -> None:
        self._store = store
        self._publisher = publisher
        self._settings = settings

    async def place(
        self, request: OrderCreate, key: str | None = None, owner: str = ""
    ) -> Placed | KeyReused | Unavailable:
        """Place one order; with an Idempotency-Key `key` (of `owner`), at most once per key."""
        order = Order.place(request)
        replayed = False
        if key is not None:
            body = _fingerprint(request)
            scoped = f"{owner}\n{key}" if owner else key
            claim = await self._store.claim(scoped, order, body, self._settings.idempotency_key_ttl_s)
            if claim.fingerprint != body:
                return KeyReused()
            if not claim.first:
                order, replayed = claim.order, True
                if (current := await self._store.get(order.order_id)) is not None:
                    return Placed(current, current.model_dump(mode="json"), replayed=True)
        outgoing = _Outgoing.of(order)
        refused = await self._publish([outgoing])
        return refused or Placed(order, outgoing.data, replayed)

    async def place_batch(self, requests: Sequence[OrderCreate]) -> BatchPlaced | Unavailable:
        """Place every order or none (`requests` must not be empty). The orders share one
        read-model shard, drawn at random, so that abandoning them is one atomic step."""
        shards = self._store.keys.shards
        shard = secrets.randbelow(shards)
        outgoing = [_Outgoing.of(Order.place(r, new_order_id(shard, shards))) for r in requests]
        refused = await self._publish(outgoing)
        return refused or BatchPlaced([Placed(o.order, o.data) for o in outgoing])

    async def cancel(self, order_id: str) -> Cancelled | NotFound | TooLate:
        """Cancel atomically against the order's current status, then announce it."""
        tracing.tag_order(order_id)
        result = await self._store.transition(order_id, OrderStatus.CANCELLED, trace=tracing.traceparent())
        if result.status is None:
            return NotFound()
        if result.status is not OrderStatus.CANCELLED:
            return TooLate(result.status)
        order = await self._store.get(order_id)
        if order is None:  # only if it expired in between; there is no delete
            return NotFound()
        published = False
        if result.applied and order.cancelled_at:
            published = await self._announce_cancel(order_id, order.cancelled_at)
        return Cancelled(order, result.applied, published)

    async def _announce_cancel(self, order_id: str, cancelled_at: str) -> bool:
        """Publish `order.cancelled`; False when Kafka did not take it."""
        try:
            with tracing.span("orders publish", order_id, kind=SpanKind.PRODUCER):
                value = encode_cancelled(order_id, cancelled_at, tracing.trace_fields())
                await self._publisher.publish(order_id, value, record_headers())
        except KafkaUnavailable as exc:
            # The cancellation is decided and recorded; the event only reports it.
            log.warning("order %s cancelled, but order.cancelled not published: %s", order_id, exc)
            return False
        return True

    async def _publish(self, outgoing: list[_Outgoing]) -> Unavailable | None:
        """Publish the orders, all or none, then write them through; None once Kafka holds them."""
        single = outgoing[0].order.order_id if len(outgoing) == 1 else None
        if single:
            ORDER_ID.set(single)
            tracing.tag_order(single)
        with tracing.span(
            "orders publish", single, kind=SpanKind.PRODUCER, attributes={"orders.count": len(outgoing)}
        ):
            trace = tracing.trace_fields()
            messages = [
                (o.order.order_id, encode_placed(o.order, o.event_id, o.data, trace)) for o in outgoing
            ]
            headers = record_headers()
            try:
                if len(messages) == 1:
                    await self._publisher.publish(*messages[0], headers)
                else:
                    await self._publisher.publish_all(messages, headers)
            except KafkaUnavailable as exc:
                if not exc.maybe_sent or not await self._abandon(outgoing):
                    return Unavailable(str(exc))
                log.info(
                    "orders %s: Kafka was slow to acknowledge but held them",
                    [o.order.order_id for o in outgoing][:3],
                )
                return None
            await self._write_through(outgoing, trace.get("traceparent", ""))
            return None

    async def _write_through(self, outgoing: list[_Outgoing], trace: str) -> None:
        """Make the orders Kafka holds readable at once (decision 1 of the module's docstring)."""
        try:
            await self._store.create_all(
                [(o.order, o.event_id) for o in outgoing], [o.data for o in outgoing], trace
            )
        except RedisError as exc:
            log.warning(
                "%d orders in Kafka but not yet readable (the processor writes them): %s",
                len(outgoing),
                redis_error_text(exc),
            )

    async def _abandon(self, outgoing: list[_Outgoing]) -> bool:
        """Make sure unacknowledged events are never applied; True if their orders exist after all."""
        events = [(o.order.order_id, o.event_id) for o in outgoing]
        try:
            return await self._store.abandon(events, self._settings.abandoned_event_ttl_s)
        except RedisError as exc:
            # The mark is allow-oom (a full Redis takes it): this is Redis unreachable or refusing
            # for another reason, the documented limit of the 503's promise.
            log.error(
                "cannot mark %d events abandoned (%s); if Kafka took them, they will still be applied: %s",
                len(events),
                redis_error_text(exc),
                events[:3],
            )
            return False
