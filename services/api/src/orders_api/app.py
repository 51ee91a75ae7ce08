"""The ingest API: a 2xx only once Kafka holds the order, and a 503 never becomes an order later.

- `POST /api/orders` publishes `order.placed` and answers 202 after Kafka's
  acknowledgment. It then writes the order to the read model itself, so the
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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from redis.exceptions import RedisError
from starlette.responses import Response

from orders_common.events import encode_cancelled, encode_placed
from orders_common.http import (
    NO_TELEMETRY,
    OrderIdPath,
    direct,
    envelope,
    health_router,
    install_common,
    parse_order_id,
    unavailable,
    validation_failed,
)
from orders_common.models import (
    MAX_BATCH,
    Envelope,
    ErrorEnvelope,
    Order,
    OrderBatch,
    OrderCreate,
    OrderStatus,
    new_order_id,
)
from orders_common.serving import freeze_startup_heap
from orders_common.store import OrderStore

from .publisher import KafkaUnavailable, Publisher
from .settings import Settings, get_settings

__all__ = ["create_app"]

log = logging.getLogger(__name__)

REDIS_TIMEOUT = 2.0
"""Longest wait for one Redis command on a request's path."""

_JSON_TYPES = ("application/json", "application/cloudevents+json")
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"

BATCH_BODY_BYTES = 1024 * 1024

_ORDER_BODY = {
    "required": True,
    "content": {"application/json": {"schema": OrderCreate.model_json_schema()}},
}
_BATCH_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "orders": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_BATCH,
                        "items": OrderCreate.model_json_schema(),
                    }
                },
                "required": ["orders"],
                "additionalProperties": False,
            }
        }
    },
}


def _not_json(request: Request) -> Response | None:
    """The 415 for a body that does not say it is JSON."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() not in _JSON_TYPES:
        return envelope("Content-Type must be application/json", status_code=415)
    return None


def _error(description: str) -> dict[str, object]:
    return {"model": ErrorEnvelope, "description": description}


_UNAVAILABLE = _error("Kafka or Redis cannot take the request now; retry after `Retry-After`")


_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
_IDEMPOTENCY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "1 to 255 visible ASCII characters. Retrying with the same key and body "
    "returns the same order instead of placing another.",
    "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    publisher = Publisher(settings)
    store = OrderStore.connect(settings, timeout=REDIS_TIMEOUT)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await publisher.start()
        freeze_startup_heap()
        try:
            yield
        finally:
            await publisher.stop()
            await store.redis.aclose()

    app = FastAPI(
        title="Order ingest API",
        version="0.1.0",
        description="Places and cancels orders: validates them and publishes them to Kafka. "
        "Read them back on the query service.",
        lifespan=lifespan,
        telemetry=NO_TELEMETRY,
    )
    app.state.publisher = publisher
    app.state.store = store
    install_common(app, settings.cors_origins, body_limits={"/api/orders/batch": BATCH_BODY_BYTES})
    location = settings.query_public_url.rstrip("/") + "/api/orders/{}"

    def accepted(order: Order, data: dict[str, Any] | None = None, *, replayed: bool = False) -> Response:
        headers = {"Location": location.format(order.order_id)}
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        data = order.model_dump(mode="json") if data is None else data
        return envelope("Order accepted", data, status_code=202, headers=headers)

    async def publish_placed(
        orders: list[Order], data: list[dict[str, Any]], refused: str
    ) -> Response | None:
        """Publish the orders (`data`: each one's JSON form), all or none; None once Kafka
        holds them, else the 503 to answer."""
        events = [(order.order_id, new_order_id()) for order in orders]
        values = [
            encode_placed(order, event_id, fields)
            for order, (_, event_id), fields in zip(orders, events, data, strict=True)
        ]
        try:
            if len(orders) == 1:
                await publisher.publish(orders[0].order_id, values[0])
            else:
                await publisher.publish_all(
                    [(o.order_id, value) for o, value in zip(orders, values, strict=True)]
                )
        except KafkaUnavailable as exc:
            if not exc.maybe_sent or not await abandon(events):
                return unavailable(f"{refused}, Kafka is unavailable: {exc}")
            log.info("orders %s: Kafka was slow to acknowledge but held them", [o for o, _ in events][:3])
            return None
        try:
            await store.create_all(
                [(o, event_id) for o, (_, event_id) in zip(orders, events, strict=True)], data
            )
        except RedisError as exc:
            log.warning(
                "%d orders in Kafka but not yet readable (the processor writes them): %r", len(orders), exc
            )
        return None

    async def abandon(events: list[tuple[str, str]]) -> bool:
        """Make sure unacknowledged events are never applied; True if their orders exist after all."""
        try:
            return await store.abandon(events, settings.abandoned_event_ttl_s)
        except RedisError as exc:
            log.error(
                "cannot mark %d events abandoned (%r); if Kafka took them, they will still be applied: %s",
                len(events),
                exc,
                events[:3],
            )
            return False

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    @direct(
        app,
        "POST",
        "/api/orders",
        status_code=202,
        summary="Place an order",
        response_model=Envelope[Order],
        openapi_extra={"requestBody": _ORDER_BODY, "parameters": [_IDEMPOTENCY_PARAMETER]},
        responses={
            400: _error("Invalid order (see `errors`) or Idempotency-Key"),
            413: _error("Body over 64 KiB"),
            415: _error("Body is not JSON"),
            422: _error("Idempotency-Key already used with a different order"),
            503: _UNAVAILABLE,
        },
    )
    async def place_order(request: Request) -> Response:
        """Validate the order, publish `order.placed` keyed by its id, and answer 202 once
        every in-sync Kafka replica holds it. Track it on the query service (`Location`)."""
        if (wrong_type := _not_json(request)) is not None:
            return wrong_type
        try:
            placed = OrderCreate.model_validate_json(await request.body())
        except ValidationError as exc:
            return validation_failed(exc)
        order = Order.place(placed)
        replayed = False
        idempotency_key = request.headers.get("idempotency-key")
        if idempotency_key is not None:
            if not _IDEMPOTENCY_KEY.match(idempotency_key):
                errors = [{"field": "Idempotency-Key", "reason": "1 to 255 visible ASCII characters"}]
                return envelope("Invalid Idempotency-Key", status_code=400, errors=errors)
            fingerprint = hashlib.sha256(placed.model_dump_json().encode()).hexdigest()
            claim = await store.claim(idempotency_key, order, fingerprint, settings.idempotency_key_ttl_s)
            if claim.fingerprint != fingerprint:
                return envelope("Idempotency-Key was already used for a different order", status_code=422)
            if not claim.first:
                order, replayed = claim.order, True
                if (current := await store.get(order.order_id)) is not None:
                    return accepted(current, replayed=True)
        data = order.model_dump(mode="json")
        if (failure := await publish_placed([order], [data], "Order not accepted")) is not None:
            return failure
        return accepted(order, data, replayed=replayed)

    @direct(
        app,
        "POST",
        "/api/orders/batch",
        status_code=202,
        summary=f"Place up to {MAX_BATCH} orders, all or none",
        response_model=Envelope[list[Order]],
        openapi_extra={"requestBody": _BATCH_BODY},
        responses={
            400: _error("An invalid order (see `errors`: `orders.3.price` is the fourth order's price)"),
            413: _error(f"Body over {BATCH_BODY_BYTES // 1024} KiB"),
            415: _error("Body is not JSON"),
            503: _UNAVAILABLE,
        },
    )
    async def place_batch(request: Request) -> Response:
        """Validate every order, publish them in one Kafka transaction, and answer 202 with
        every order once the transaction is committed; on any failure none is placed."""
        if (wrong_type := _not_json(request)) is not None:
            return wrong_type
        try:
            batch = OrderBatch.model_validate_json(await request.body())
        except ValidationError as exc:
            return validation_failed(exc)
        orders = [Order.place(placed) for placed in batch.orders]
        data = [order.model_dump(mode="json") for order in orders]
        if (failure := await publish_placed(orders, data, "No order of the batch accepted")) is not None:
            return failure
        return envelope(
            f"{len(orders)} order{'' if len(orders) == 1 else 's'} accepted", data, status_code=202
        )

    @app.post(
        "/api/orders/{orderId}/cancel",
        summary="Cancel an order that is still PLACED",
        response_model=Envelope[Order],
        responses={
            400: _error("orderId is not a UUID"),
            404: _error("No such order"),
            409: _error("The order is PROCESSING or final; it can no longer be cancelled"),
            503: _UNAVAILABLE,
        },
    )
    async def cancel_order(order_id_path: OrderIdPath) -> Response:
        """Cancel atomically against the order's current status: a 200 means it is CANCELLED
        (the processor can no longer start it); 409 once it is PROCESSING or later."""
        oid = parse_order_id(order_id_path)
        result = await store.transition(oid, OrderStatus.CANCELLED)
        if result.status is None:
            raise HTTPException(404, f"Order {oid} not found")
        if result.status is not OrderStatus.CANCELLED:
            raise HTTPException(409, f"Order {oid} is {result.status}; only a PLACED order can be cancelled")
        order = await store.get(oid)
        if order is None:  # only if it expired in between; there is no delete
            raise HTTPException(404, f"Order {oid} not found")
        if result.applied and order.cancelled_at:
            try:
                await publisher.publish(oid, encode_cancelled(oid, order.cancelled_at))
            except KafkaUnavailable as exc:
                # The cancellation is decided and recorded; the event only reports it.
                log.warning("order %s cancelled, but order.cancelled not published: %s", oid, exc)
        message = "Order cancelled" if result.applied else "Order was already cancelled"
        return envelope(message, order.model_dump(mode="json"))

    # Last: routes the router tries before a direct route would cost every request to it.
    app.include_router(health_router({"kafka": publisher.check, "redis": store.redis.ping}))

    return app
