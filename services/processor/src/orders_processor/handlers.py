"""What each record of the orders topic does to an order, through the store.

- `order.placed`: PLACED (unless the api wrote it through already) and PROCESSING in one
  atomic Redis step, the processing delay, then COMPLETED in another: two round trips an
  order. An order the api cancelled meanwhile stays CANCELLED; an event the api answered
  503 for (abandoned) creates nothing.
- `order.cancelled`: replays the api's cancellation idempotently; one the order can no
  longer take (it went on) is an impossible transition.
- A record that can never be handled (not JSON, wrong schema, unknown type, a key that is
  not its subject, an impossible transition, a failure no retry cures) goes to the
  dead letters with the reason, and counts as handled.

Each step is idempotent, so a replayed record resumes where the order stands and adds no
history. Transient errors (Redis, Kafka, the network) are raised, for the caller to retry.
"""

import asyncio
import contextlib
import logging
import re
import time
from datetime import datetime
from typing import Protocol

from aiokafka.errors import KafkaError
from opentelemetry.trace import SpanKind
from redis.exceptions import RedisError

from orders_contract.events import EventError, OrderCancelledEvent, decode_event
from orders_contract.models import Order, OrderStatus
from orders_readmodel.store import OrderStore
from orders_runtime import tracing
from orders_runtime.logs import ORDER_ID

from .consumer import Record
from .deadletter import reason_class
from .metrics import HandlerMetrics

__all__ = ["TRANSIENT", "DeadLetters", "OrderHandlers"]

log = logging.getLogger(__name__)

TRANSIENT = (RedisError, KafkaError, OSError)
"""Errors a retry may cure: what `OrderHandlers.handle` raises."""


class DeadLetters(Protocol):
    """Where a record that can never be handled goes (deadletter.KafkaDeadLetters)."""

    async def send(self, record: Record, reason: str) -> None: ...


class OrderHandlers:
    def __init__(
        self,
        store: OrderStore,
        dead_letters: DeadLetters,
        metrics: HandlerMetrics,
        delay_s: float = 0.0,
        reject: re.Pattern[str] | None = None,
    ) -> None:
        """`delay_s`: the simulated work between PROCESSING and COMPLETED; `reject`: fault
        injection, orders whose product name it matches are dead-lettered."""
        self._store = store
        self._dead_letters = dead_letters
        self.metrics = metrics
        self._delay = delay_s
        self._reject = reject

    async def handle(self, record: Record) -> None:
        """One record of the orders topic, in a span that goes on from the producer's trace."""
        if record.key is not None:
            ORDER_ID.set(record.key.decode(errors="replace"))
        with tracing.span(
            "orders process",
            ORDER_ID.get(),
            kind=SpanKind.CONSUMER,
            context=tracing.context_from_headers(record.headers),
            attributes={
                "messaging.kafka.partition": record.partition,
                "messaging.kafka.offset": record.offset,
            },
        ):
            await self._dispatch(record)

    async def _dispatch(self, record: Record) -> None:
        try:
            event = decode_event(record.value)
            if record.key is not None and record.key != event.subject.encode():
                raise EventError("record key differs from the event's subject")
            if isinstance(event, OrderCancelledEvent):
                await self.cancelled(event)
            else:
                order = event.data.to_order()
                if self._reject is not None and self._reject.search(order.product_name):
                    raise EventError(
                        "rejected by fault injection: PROCESSOR_REJECT_PRODUCTS matches the product"
                    )
                await self.placed(order, event.id)
        except EventError as exc:
            await self.bad_record(record, str(exc))
        except TRANSIENT as exc:
            if isinstance(exc, RedisError):
                self.metrics.redis_errors.inc()
            raise  # retried by the caller
        except Exception as exc:
            # A failure no retry can cure must not freeze the partition's commits.
            log.exception("cannot process %s[%d]@%d", record.topic, record.partition, record.offset)
            await self.bad_record(record, f"processing failed: {exc!r}")

    async def placed(self, order: Order, event_id: str = "") -> None:
        """Drive one order as far as it goes: PLACED, PROCESSING, (delay), COMPLETED.

        Safe to repeat at any point: each step is applied at most once, so a
        replayed event resumes where the order stands and adds no history. An
        order the api cancelled stays CANCELLED (PROCESSING is refused), and an
        event the api abandoned (answered 503 for) creates nothing.
        """
        store, m = self._store, self.metrics
        with tracing.span("order start", order.order_id):  # created if need be, and PROCESSING
            started = await store.start(order, event_id, tracing.traceparent())
        if started.abandoned:
            log.info("order %s: event %s was answered 503 by the api; ignored", order.order_id, event_id)
            m.abandoned.inc()
            return
        status = started.status
        if started.created:  # the api had not written it through: this call applied PLACED
            m.transitioned(OrderStatus.PLACED)
        if started.applied:
            m.transitioned(OrderStatus.PROCESSING)
        if status is OrderStatus.PROCESSING:
            if self._delay:
                with tracing.span("order work", order.order_id):
                    await asyncio.sleep(self._delay)
            with tracing.span("order complete", order.order_id):
                result = await store.transition(
                    order.order_id, OrderStatus.COMPLETED, trace=tracing.traceparent()
                )
            if result.applied:
                m.completed.inc()
                m.transitioned(OrderStatus.COMPLETED)
                with contextlib.suppress(ValueError):
                    placed = datetime.fromisoformat(order.created_at).timestamp()
                    m.placed_to_completed.observe(max(0.0, time.time() - placed))
                return
        if status is OrderStatus.CANCELLED:
            m.found_cancelled.inc()  # the api cancelled it before processing began
        else:
            m.replayed.inc()

    async def cancelled(self, event: OrderCancelledEvent) -> None:
        """Apply a cancellation the api already decided and recorded (normally a no-op replay);
        EventError when the order can no longer be cancelled."""
        data = event.data
        with tracing.span("order cancel", data.order_id):
            result = await self._store.transition(
                data.order_id, OrderStatus.CANCELLED, data.cancelled_at, tracing.traceparent()
            )
        if result.applied:
            self.metrics.cancelled.inc()
            self.metrics.transitioned(OrderStatus.CANCELLED)
        elif result.status is not OrderStatus.CANCELLED:
            raise EventError(f"impossible transition: order {data.order_id} is {result.status or 'unknown'}")

    async def bad_record(self, record: Record, reason: str) -> None:
        """A record that can never be handled: to the dead letters, with `reason`."""
        log.warning("dead-lettering %s[%d]@%d: %s", record.topic, record.partition, record.offset, reason)
        with tracing.span("orders dead-letter", ORDER_ID.get(), kind=SpanKind.PRODUCER):
            await self._dead_letters.send(record, reason)
        self.metrics.dead_lettered.inc()
        self.metrics.dead_letters.labels(reason_class(reason)).inc()
