"""Placing and cancelling orders: a 2xx only once Kafka holds the order, and a 503 never becomes
an order later.

- `POST /api/orders` publishes `order.placed` and answers 202 after Kafka's
  acknowledgment, then writes the order to the read model itself, so the
  `Location` it returns can be read at once (the processor's write of the
  same order is then a no-op).
- When Kafka does not acknowledge in time the event may still land later
  (the producer keeps retrying it). Before answering 503 the api marks that
  event abandoned in Redis, atomically against the order's existence: the
  processor then never applies it. If the order exists already, Kafka held it
  after all and the answer is 202.
- `POST /api/orders/batch` places up to 1,000 orders in one Kafka
  transaction: 202 with all of them once it is committed, else none. When
  the commit's outcome is unknown, all its events are abandoned at once.
- `Idempotency-Key`: the first request with a key claims it in Redis with its
  order; every later one with the same key and body gets that same order.
- `POST /api/orders/{orderId}/cancel` decides in one atomic Redis step
  (PLACED -> CANCELLED), so a 2xx can never be overtaken by the processor,
  then publishes `order.cancelled`.
"""

import hashlib
import logging
import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException
from opentelemetry.trace import SpanKind
from pydantic import AfterValidator
from redis.exceptions import RedisError
from starlette.responses import Response

from orders_contract.events import encode_cancelled, encode_placed
from orders_contract.models import (
    MAX_BATCH,
    Envelope,
    ErrorEnvelope,
    Order,
    OrderBatch,
    OrderCreate,
    OrderStatus,
    new_order_id,
)
from orders_kafka.clients import record_headers
from orders_readmodel.store import OrderStore
from orders_runtime import tracing
from orders_runtime.logs import ORDER_ID
from orders_web.auth import Role
from orders_web.fastpath import direct
from orders_web.http import OrderIdPath, envelope, parse_order_id, redis_error_text, unavailable

from ..deps import PrincipalDep, PublisherDep, SettingsDep, StoreDep
from ..publisher import KafkaUnavailable, Publisher
from ..settings import Settings

__all__ = ["router"]

log = logging.getLogger(__name__)

BATCH_BODY_BYTES = 1024 * 1024

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def _idempotency_key(value: str | None) -> str | None:
    if value is not None and not _IDEMPOTENCY_KEY.match(value):
        raise ValueError("1 to 255 visible ASCII characters")
    return value


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="1 to 255 visible ASCII characters. Retrying with the same key and body "
        "returns the same order instead of placing another.",
        json_schema_extra={"pattern": _IDEMPOTENCY_KEY.pattern},
    ),
    AfterValidator(_idempotency_key),
]


def _error(description: str) -> dict[str, object]:
    return {"model": ErrorEnvelope, "description": description}


_UNAVAILABLE = _error("Kafka or Redis cannot take the request now; retry after `Retry-After`")

_NOT_YOURS = "userId must be your own: a customer places orders only as themselves"

router = APIRouter(tags=["orders"])


@direct(
    router,
    "POST",
    "/api/orders",
    status_code=202,
    summary="Place an order",
    response_model=Envelope[Order],
    responses={
        400: _error("Invalid order (see `errors`) or Idempotency-Key"),
        403: _error("A customer's order for another userId"),
        413: _error("Body over 64 KiB"),
        415: _error("Body is not JSON"),
        422: _error("Idempotency-Key already used with a different order"),
        503: _UNAVAILABLE,
    },
)
async def place_order(
    placed: OrderCreate,
    store: StoreDep,
    publisher: PublisherDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Validate the order, publish `order.placed` keyed by its id, and answer 202 once
    every in-sync Kafka replica holds it. Track it on the query service (`Location`).
    A customer places orders only as themselves (403 for another `userId`)."""
    if not principal.may_place_for(placed.user_id):
        raise HTTPException(403, _NOT_YOURS)
    order = Order.place(placed)
    replayed = False
    if idempotency_key is not None:
        fingerprint = hashlib.sha256(placed.model_dump_json().encode()).hexdigest()
        # A key belongs to the principal that sent it (and the order's user): never shared.
        owner = principal.idempotency_owner
        key = f"{owner}\n{idempotency_key}" if owner else idempotency_key
        claim = await store.claim(key, order, fingerprint, settings.idempotency_key_ttl_s)
        if claim.fingerprint != fingerprint:
            return envelope("Idempotency-Key was already used for a different order", status_code=422)
        if not claim.first:
            order, replayed = claim.order, True
            if (current := await store.get(order.order_id)) is not None:
                return _accepted(settings, current, replayed=True)
    data = order.model_dump(mode="json")
    failure = await _publish_placed(store, publisher, settings, [order], [data], "Order not accepted")
    return failure or _accepted(settings, order, data, replayed=replayed)


@direct(
    router,
    "POST",
    "/api/orders/batch",
    max_body_size=BATCH_BODY_BYTES,
    status_code=202,
    summary=f"Place up to {MAX_BATCH} orders, all or none",
    response_model=Envelope[list[Order]],
    responses={
        400: _error("An invalid order (see `errors`: `orders.3.price` is the fourth order's price)"),
        403: _error("A customer's batch with an order for another userId"),
        413: _error(f"Body over {BATCH_BODY_BYTES // 1024} KiB"),
        415: _error("Body is not JSON"),
        503: _UNAVAILABLE,
    },
)
async def place_orders(
    batch: OrderBatch,
    store: StoreDep,
    publisher: PublisherDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> Response:
    """Validate every order, publish them in one Kafka transaction, and answer 202 with
    every order once the transaction is committed; on any failure none is placed."""
    if not all(principal.may_place_for(placed.user_id) for placed in batch.orders):
        raise HTTPException(403, _NOT_YOURS)
    orders = [Order.place(placed) for placed in batch.orders]
    data = [order.model_dump(mode="json") for order in orders]
    failure = await _publish_placed(
        store, publisher, settings, orders, data, "No order of the batch accepted"
    )
    if failure is not None:
        return failure
    return envelope(f"{len(orders)} order{'' if len(orders) == 1 else 's'} accepted", data, status_code=202)


@router.post(
    "/api/orders/{orderId}/cancel",
    summary="Cancel an order that is still PLACED",
    response_model=Envelope[Order],
    responses={
        400: _error("orderId is not a UUID"),
        403: _error("A service client may not cancel"),
        404: _error("No such order (or another user's)"),
        409: _error("The order is PROCESSING or final; it can no longer be cancelled"),
        503: _UNAVAILABLE,
    },
)
async def cancel_order(
    order_id_path: OrderIdPath, store: StoreDep, publisher: PublisherDep, principal: PrincipalDep
) -> Response:
    """Cancel atomically against the order's current status: a 200 means it is CANCELLED
    (the processor can no longer start it); 409 once it is PROCESSING or later. Another
    user's order is 404 to a customer (its id is not confirmed), 403 to a service client."""
    oid = parse_order_id(order_id_path)
    if principal.role is not Role.ANONYMOUS:
        owner = await store.get(oid)
        if owner is None or not principal.may_read(owner.user_id):
            raise HTTPException(404, f"Order {oid} not found")
        if not principal.may_cancel(owner.user_id):
            raise HTTPException(403, "Only staff or the order's user may cancel it")
    tracing.tag_order(oid)
    result = await store.transition(oid, OrderStatus.CANCELLED, trace=tracing.traceparent())
    if result.status is None:
        raise HTTPException(404, f"Order {oid} not found")
    if result.status is not OrderStatus.CANCELLED:
        raise HTTPException(409, f"Order {oid} is {result.status}; only a PLACED order can be cancelled")
    order = await store.get(oid)
    if order is None:  # only if it expired in between; there is no delete
        raise HTTPException(404, f"Order {oid} not found")
    if result.applied and order.cancelled_at:
        try:
            with tracing.span("orders publish", oid, kind=SpanKind.PRODUCER):
                value = encode_cancelled(oid, order.cancelled_at, tracing.trace_fields())
                await publisher.publish(oid, value, record_headers())
        except KafkaUnavailable as exc:
            # The cancellation is decided and recorded; the event only reports it.
            log.warning("order %s cancelled, but order.cancelled not published: %s", oid, exc)
    message = "Order cancelled" if result.applied else "Order was already cancelled"
    return envelope(message, order.model_dump(mode="json"))


def _accepted(
    settings: Settings, order: Order, data: dict[str, Any] | None = None, *, replayed: bool = False
) -> Response:
    headers = {"Location": f"{settings.query_public_url.rstrip('/')}/api/orders/{order.order_id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    data = order.model_dump(mode="json") if data is None else data
    return envelope("Order accepted", data, status_code=202, headers=headers)


async def _publish_placed(
    store: OrderStore,
    publisher: Publisher,
    settings: Settings,
    orders: list[Order],
    data: list[dict[str, Any]],
    refused: str,
) -> Response | None:
    """Publish the orders (`data`: each one's JSON form), all or none; None once Kafka
    holds them, else the 503 to answer."""
    single = orders[0].order_id if len(orders) == 1 else None
    if single:
        ORDER_ID.set(single)
        tracing.tag_order(single)
    with tracing.span(
        "orders publish", single, kind=SpanKind.PRODUCER, attributes={"orders.count": len(orders)}
    ):
        events = [(order.order_id, new_order_id()) for order in orders]
        trace = tracing.trace_fields()
        values = [
            encode_placed(order, event_id, fields, trace)
            for order, (_, event_id), fields in zip(orders, events, data, strict=True)
        ]
        headers = record_headers()
        try:
            if len(orders) == 1:
                await publisher.publish(orders[0].order_id, values[0], headers)
            else:
                await publisher.publish_all(
                    [(o.order_id, v) for o, v in zip(orders, values, strict=True)], headers
                )
        except KafkaUnavailable as exc:
            if not exc.maybe_sent or not await _abandon(store, settings, events):
                return unavailable(f"{refused}, Kafka is unavailable: {exc}")
            log.info("orders %s: Kafka was slow to acknowledge but held them", [o for o, _ in events][:3])
            return None
        try:
            await store.create_all(
                [(o, event_id) for o, (_, event_id) in zip(orders, events, strict=True)],
                data,
                trace.get("traceparent", ""),
            )
        except RedisError as exc:
            log.warning(
                "%d orders in Kafka but not yet readable (the processor writes them): %s",
                len(orders),
                redis_error_text(exc),
            )
        return None


async def _abandon(store: OrderStore, settings: Settings, events: list[tuple[str, str]]) -> bool:
    """Make sure unacknowledged events are never applied; True if their orders exist after all."""
    try:
        return await store.abandon(events, settings.abandoned_event_ttl_s)
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
