"""The api's endpoints: place an order, place a batch, cancel an order.

Each route parses its input, decides what the caller may do, calls the protocol
(`orders_api.placing`, which says what a 2xx promises and how Kafka and Redis keep it)
and maps its typed result to the HTTP answer: 202 with `Location` once Kafka holds an
order, 422 for a reused Idempotency-Key, 503 with `Retry-After` when Kafka cannot take it.
"""

import re
from typing import Annotated, assert_never

from fastapi import APIRouter, Header, HTTPException
from pydantic import AfterValidator
from starlette.responses import Response

from orders_contract.models import MAX_BATCH, Envelope, ErrorEnvelope, Order, OrderBatch, OrderCreate
from orders_readmodel.store import OrderStore
from orders_web.auth import Principal, Role
from orders_web.fastpath import direct
from orders_web.http import OrderIdPath, envelope, parse_order_id, unavailable

from ..deps import DeskDep, PrincipalDep, SettingsDep, StoreDep
from ..placing import BatchPlaced, Cancelled, KeyReused, NotFound, Placed, TooLate, Unavailable
from ..settings import Settings

__all__ = ["router"]

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
    desk: DeskDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Validate the order, publish `order.placed` keyed by its id, and answer 202 once
    every in-sync Kafka replica holds it. Track it on the query service (`Location`).
    A customer places orders only as themselves (403 for another `userId`)."""
    if not principal.may_place_for(placed.user_id):
        raise HTTPException(403, _NOT_YOURS)
    # A key belongs to the principal that sent it (and the order's user): never shared.
    result = await desk.place(placed, idempotency_key, principal.idempotency_owner)
    match result:
        case Placed():
            return _accepted(settings, result)
        case KeyReused():
            return envelope("Idempotency-Key was already used for a different order", status_code=422)
        case Unavailable(reason=reason):
            return unavailable(f"Order not accepted, Kafka is unavailable: {reason}")
        case _:
            assert_never(result)


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
async def place_orders(batch: OrderBatch, desk: DeskDep, principal: PrincipalDep) -> Response:
    """Validate every order, publish them in one Kafka transaction, and answer 202 with
    every order once the transaction is committed; on any failure none is placed."""
    if not all(principal.may_place_for(placed.user_id) for placed in batch.orders):
        raise HTTPException(403, _NOT_YOURS)
    result = await desk.place_batch(batch.orders)
    match result:
        case BatchPlaced(orders=orders):
            count = f"{len(orders)} order{'' if len(orders) == 1 else 's'}"
            return envelope(f"{count} accepted", [o.data for o in orders], status_code=202)
        case Unavailable(reason=reason):
            return unavailable(f"No order of the batch accepted, Kafka is unavailable: {reason}")
        case _:
            assert_never(result)


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
    order_id_path: OrderIdPath, store: StoreDep, desk: DeskDep, principal: PrincipalDep
) -> Response:
    """Cancel atomically against the order's current status: a 200 means it is CANCELLED
    (the processor can no longer start it); 409 once it is PROCESSING or later. Another
    user's order is 404 to a customer (its id is not confirmed), 403 to a service client."""
    oid = parse_order_id(order_id_path)
    await _check_may_cancel(principal, store, oid)
    result = await desk.cancel(oid)
    match result:
        case Cancelled(order=order, applied=applied):
            message = "Order cancelled" if applied else "Order was already cancelled"
            return envelope(message, order.model_dump(mode="json"))
        case NotFound():
            raise HTTPException(404, f"Order {oid} not found")
        case TooLate(status=status):
            raise HTTPException(409, f"Order {oid} is {status}; only a PLACED order can be cancelled")
        case _:
            assert_never(result)


async def _check_may_cancel(principal: Principal, store: OrderStore, order_id: str) -> None:
    """404 for an order the caller may not see (or none), 403 for one it may see but not cancel."""
    if principal.role is Role.ANONYMOUS:
        return  # AUTH_MODE=none: anyone may cancel any order
    owner = await store.get(order_id)
    if owner is None or not principal.may_read(owner.user_id):
        raise HTTPException(404, f"Order {order_id} not found")
    if not principal.may_cancel(owner.user_id):
        raise HTTPException(403, "Only staff or the order's user may cancel it")


def _accepted(settings: Settings, placed: Placed) -> Response:
    headers = {"Location": f"{settings.query_public_url.rstrip('/')}/api/orders/{placed.order.order_id}"}
    if placed.replayed:
        headers["Idempotent-Replayed"] = "true"
    return envelope("Order accepted", placed.data, status_code=202, headers=headers)
