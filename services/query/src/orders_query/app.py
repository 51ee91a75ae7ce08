"""The read API: every order read is served from the Redis read model."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from orders_common.http import NO_TELEMETRY, OrderIdPath, envelope, health_router, install_common, order_id
from orders_common.models import MAX_USER_ID, Envelope, ErrorEnvelope, ListEnvelope, Order, OrderStatus
from orders_common.store import InvalidCursor, OrderStore

from .settings import Settings, get_settings

__all__ = ["create_app"]

MAX_LIMIT = 1000


def get_store(request: Request) -> OrderStore:
    store: OrderStore = request.app.state.store
    return store


StoreDep = Annotated[OrderStore, Depends(get_store)]
Limit = Annotated[
    int,
    Query(ge=1, description=f"Orders per page, 100 by default; more than {MAX_LIMIT} reads as {MAX_LIMIT}."),
]
Cursor = Annotated[str | None, Query(max_length=64, description="`page.nextCursor` of the previous page.")]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorEnvelope, "description": "Invalid parameter (see `errors`)"},
    503: {"model": ErrorEnvelope, "description": "Redis is unavailable"},
}


async def _page(store: StoreDep, index: str, limit: int, cursor: str | None, where: str = "") -> Response:
    limit = min(limit, MAX_LIMIT)
    try:
        orders, next_cursor = await store.page(index, limit, cursor)
    except InvalidCursor as exc:
        raise HTTPException(400, str(exc)) from None
    return envelope(
        f"{len(orders)} order{'' if len(orders) == 1 else 's'}{where}",
        [order.model_dump(mode="json") for order in orders],
        page={"limit": limit, "nextCursor": next_cursor},
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.store = store = OrderStore.connect(settings)
        try:
            yield
        finally:
            await store.redis.aclose()

    app = FastAPI(
        title="Order query API",
        version="0.1.0",
        description="Reads orders and their status from the read model that the processor keeps.",
        lifespan=lifespan,
        telemetry=NO_TELEMETRY,
    )
    install_common(app, settings.cors_origins)

    async def redis_ping() -> None:
        await app.state.store.redis.ping()

    app.include_router(health_router({"redis": redis_ping}))

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.get(
        "/api/orders",
        summary="All orders, newest first",
        response_model=ListEnvelope[Order],
        responses=_ERRORS,
    )
    async def list_orders(store: StoreDep, limit: Limit = 100, cursor: Cursor = None) -> Response:
        return await _page(store, store.keys.all_orders, limit, cursor)

    @app.get(
        "/api/orders/user/{userId}",
        summary="One user's orders, newest first",
        response_model=ListEnvelope[Order],
        responses=_ERRORS,
    )
    async def user_orders(
        store: StoreDep,
        user_id: Annotated[int, Path(alias="userId", ge=1, le=MAX_USER_ID)],
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> Response:
        return await _page(store, store.keys.by_user(user_id), limit, cursor, f" of user {user_id}")

    @app.get(
        "/api/orders/status/{status}",
        summary="Orders now in a status (case-insensitive), newest first",
        response_model=ListEnvelope[Order],
        responses=_ERRORS,
    )
    async def status_orders(
        store: StoreDep,
        status: Annotated[
            str, Path(max_length=32, description="PLACED, PROCESSING, COMPLETED, CANCELLED or FAILED")
        ],
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> Response:
        try:
            wanted = OrderStatus(status.upper())
        except ValueError:
            known = ", ".join(OrderStatus)
            raise HTTPException(400, f"Unknown status {status!r}; use one of {known}") from None
        return await _page(store, store.keys.by_status(wanted), limit, cursor, f" in status {wanted}")

    @app.get(
        "/api/orders/{orderId}",
        summary="One order",
        response_model=Envelope[Order],
        responses={**_ERRORS, 404: {"model": ErrorEnvelope, "description": "No such order"}},
    )
    async def get_order(store: StoreDep, order_id_path: OrderIdPath) -> Response:
        oid = order_id(order_id_path)
        order = await store.get(oid)
        if order is None:
            raise HTTPException(404, f"Order {oid} not found")
        return envelope("Order found", order.model_dump(mode="json"))

    return app
