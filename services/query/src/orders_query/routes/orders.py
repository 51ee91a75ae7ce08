"""Order reads: one order, its history, and the paginated lists, each from the Redis read model."""

import time
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from starlette.responses import Response

from orders_contract.models import (
    MAX_USER_ID,
    Envelope,
    ErrorEnvelope,
    HistoryEntry,
    ListEnvelope,
    Order,
    OrderStatus,
    PageQuery,
)
from orders_contract.reports import OrderStats
from orders_readmodel.store import Index, InvalidCursor, OrderStore
from orders_web.auth import Principal
from orders_web.fastpath import direct
from orders_web.http import OrderIdPath, envelope, parse_order_id

from ..deps import PrincipalDep, StoreDep

__all__ = ["check_owner", "parse_status", "router"]

Paging = Annotated[PageQuery, Query()]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorEnvelope, "description": "Invalid parameter (see `errors`)"},
    503: {"model": ErrorEnvelope, "description": "Redis is unavailable"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    404: {"model": ErrorEnvelope, "description": "No such order"},
}

router = APIRouter(tags=["orders"])


@direct(
    router,
    "GET",
    "/api/orders",
    summary="All orders, newest first",
    response_model=ListEnvelope[Order],
    responses=_ERRORS,
)
async def list_orders(store: StoreDep, paging: Paging, principal: PrincipalDep) -> Response:
    """Every order; a customer's own orders only."""
    if principal.user_id is not None and not principal.reads_all:
        return await _page(store, partial(store.keys.by_user, principal.user_id), paging)
    return await _page(store, store.keys.all_orders, paging)


@router.get(
    "/api/orders/user/{userId}",
    summary="One user's orders, newest first",
    response_model=ListEnvelope[Order],
    responses={**_ERRORS, 404: {"model": ErrorEnvelope, "description": "Another user's, to a customer"}},
)
async def list_user_orders(
    store: StoreDep,
    user_id: Annotated[int, Path(alias="userId", ge=1, le=MAX_USER_ID)],
    paging: Paging,
    principal: PrincipalDep,
) -> Response:
    """A customer may read only their own: another user's list is 404."""
    if not principal.may_read(user_id):
        raise HTTPException(404, f"No orders of user {user_id}")
    return await _page(store, partial(store.keys.by_user, user_id), paging, f" of user {user_id}")


@router.get(
    "/api/orders/status/{status}",
    summary="Orders now in a status (case-insensitive), newest first",
    response_model=ListEnvelope[Order],
    responses=_ERRORS,
)
async def list_orders_by_status(
    store: StoreDep,
    status: Annotated[
        str, Path(max_length=32, description="PLACED, PROCESSING, COMPLETED, CANCELLED or FAILED")
    ],
    paging: Paging,
    principal: PrincipalDep,
) -> Response:
    """A customer's own orders only: read from their index, so a page may be short (or
    empty, with a `nextCursor`): follow the cursor to the end."""
    wanted = parse_status(status)
    if principal.user_id is not None and not principal.reads_all:
        index = partial(store.keys.by_user, principal.user_id)
        return await _page(store, index, paging, f" in status {wanted}", wanted)
    return await _page(store, partial(store.keys.by_status, wanted), paging, f" in status {wanted}", wanted)


@router.get(
    "/api/orders/stats",
    summary="Orders per status, and orders placed per second over the last seconds",
    response_model=Envelope[OrderStats],
    responses=_ERRORS,
)
async def get_stats(
    store: StoreDep,
    principal: PrincipalDep,
    seconds: Annotated[
        int,
        Query(
            ge=1,
            le=OrderStore.MAX_STATS_SECONDS,
            description=f"How many seconds of rate: 1 to {OrderStore.MAX_STATS_SECONDS} (400 beyond).",
        ),
    ] = 300,
) -> Response:
    """`counts` per status, `perSecond` (orders created in each second, oldest first,
    the first starting at `since`, epoch milliseconds), `now` (the server's clock) and
    `position`: follow `/api/orders/events` from it to keep the numbers current.

    The window is at most 300 seconds (the dashboard's), so that one request costs Redis
    one round trip and a bounded amount of work, like a page read; for a longer series,
    keep the numbers current from the live feed. Staff and service clients only."""
    if not principal.reads_all:
        raise HTTPException(403, "The statistics of every order are for staff")
    now = int(time.time() * 1000)
    since = now // 1000 * 1000 - (seconds - 1) * 1000
    result = await store.stats(since, seconds)
    return envelope(
        "Order statistics",
        {
            "counts": {status.value: n for status, n in result.counts.items()},
            "total": sum(result.counts.values()),
            "perSecond": result.per_second,
            "since": since,
            "now": now,
            "position": result.head,
        },
    )


@router.get(
    "/api/orders/{orderId}/history",
    summary="Every transition of an order, oldest first, with its time",
    response_model=Envelope[list[HistoryEntry]],
    responses=_NOT_FOUND,
)
async def get_order_history(store: StoreDep, raw_id: OrderIdPath, principal: PrincipalDep) -> Response:
    order_id = parse_order_id(raw_id)
    await check_owner(store, order_id, principal)
    entries = await store.history(order_id)
    if not entries:
        raise HTTPException(404, f"Order {order_id} not found")
    return envelope(
        f"{len(entries)} transition{'' if len(entries) == 1 else 's'}",
        [entry.model_dump(mode="json") for entry in entries],
    )


@direct(
    router,
    "GET",
    "/api/orders/{orderId}",
    summary="One order",
    response_model=Envelope[Order],
    responses=_NOT_FOUND,
)
async def get_order(store: StoreDep, raw_id: OrderIdPath, principal: PrincipalDep) -> Response:
    order_id = parse_order_id(raw_id)
    order = await store.get_json(order_id)
    if order is None or not principal.may_read(order["userId"]):
        raise HTTPException(404, f"Order {order_id} not found")
    return envelope("Order found", order)


async def check_owner(store: OrderStore, order_id: str, principal: Principal) -> None:
    """404 when `principal` may not read the order (a customer, another user's order): the
    ids of others' orders are not confirmed."""
    if principal.reads_all:
        return
    owner = await store.redis.hget(store.keys.order(order_id), "userId")
    if owner is None or int(owner) != principal.user_id:
        raise HTTPException(404, f"Order {order_id} not found")


def parse_status(raw: str) -> OrderStatus:
    """A status named in any case; 400 for one that does not exist."""
    try:
        return OrderStatus(raw.upper())
    except ValueError:
        known = ", ".join(OrderStatus)
        raise HTTPException(400, f"Unknown status {raw!r}; use one of {known}") from None


async def _page(
    store: StoreDep, index: Index, paging: PageQuery, where: str = "", status: OrderStatus | None = None
) -> Response:
    """One page of an index. The index and the orders are two reads: an order of a status
    index that moved on in between is left out (the page may then be short; the cursor holds)."""
    limit = paging.size
    try:
        orders, next_cursor = await store.page(index, limit, paging.cursor)
    except InvalidCursor as exc:
        raise HTTPException(400, str(exc)) from None
    if status is not None:
        orders = [order for order in orders if order["status"] == status]
    return envelope(
        f"{len(orders)} order{'' if len(orders) == 1 else 's'}{where}",
        orders,
        page={"limit": limit, "nextCursor": next_cursor},
    )
