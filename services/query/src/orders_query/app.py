"""The read API: every order read is served from the Redis read model, live ones included."""

import asyncio
import html
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from orders_common.http import (
    NO_TELEMETRY,
    ORDER_ID_PARAMETER,
    OrderIdPath,
    direct,
    envelope,
    health_router,
    install_common,
    metrics_text,
    parse_order_id,
)
from orders_common.keys import Keys
from orders_common.models import (
    MAX_USER_ID,
    Envelope,
    ErrorEnvelope,
    HistoryEntry,
    ListEnvelope,
    Order,
    OrderStatus,
)
from orders_common.serving import freeze_startup_heap
from orders_common.store import START, InvalidCursor, InvalidPosition, OrderStore, position_key

from .live import Event, Hub, LiveStream, snapshot_frame
from .settings import Settings, get_settings

__all__ = ["create_app"]

MAX_LIMIT = 1000
REDIS_TIMEOUT = 5.0
"""Longest wait for one Redis command: a hung Redis gives 503s, not requests that never end."""


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
        orders,
        page={"limit": limit, "nextCursor": next_cursor},
    )


_PAGE_PARAMETERS = [
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": f"Orders per page, 100 by default; more than {MAX_LIMIT} reads as {MAX_LIMIT}.",
        "schema": {"type": "integer", "minimum": 1, "default": 100},
    },
    {
        "name": "cursor",
        "in": "query",
        "required": False,
        "description": "`page.nextCursor` of the previous page.",
        "schema": {"type": "string", "maxLength": 64},
    },
]


def _page_parameters(request: Request) -> tuple[int, str | None]:
    """`limit` and `cursor` read by hand (a direct route), checked as the documented schema says."""
    raw_limit = request.query_params.get("limit")
    limit = 100
    if raw_limit is not None:
        digits = raw_limit.lstrip("0")
        if not (raw_limit.isascii() and raw_limit.isdigit() and digits):
            raise RequestValidationError([_invalid("limit", "must be an integer of at least 1", raw_limit)])
        limit = MAX_LIMIT if len(digits) > 4 else int(digits)  # int() refuses 4,300+ digits
    cursor = request.query_params.get("cursor")
    if cursor is not None and len(cursor) > 64:
        raise RequestValidationError([_invalid("cursor", "must have at most 64 characters", cursor)])
    return limit, cursor


def _invalid(name: str, reason: str, value: str) -> dict[str, Any]:
    return {"type": "value_error", "loc": ("query", name), "msg": reason, "input": value}


def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


HubDep = Annotated[Hub, Depends(get_hub)]
LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        max_length=64,
        description="The `id` of the last event the client holds: the stream resumes after it.",
    ),
]
LastEventIdQuery = Annotated[
    str | None,
    Query(
        alias="lastEventId",
        max_length=64,
        description="Same as the `Last-Event-ID` header (which wins), for clients that cannot set headers.",
    ),
]

_ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorEnvelope"}
_SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "`text/event-stream`: one event per transition (`event` = the status, "
        "`data` = the order as of that transition, `id` = its position in the update stream); "
        "comment lines as heartbeats; `event: reset` when the stream no longer holds the position "
        "the client resumes from.",
        "content": {"text/event-stream": {}},
    },
    # Errors come before any event: a JSON envelope, as everywhere else.
    400: {"description": "Invalid parameter", "content": {"application/json": {"schema": _ERROR_SCHEMA}}},
    503: {"description": "Redis is unavailable", "content": {"application/json": {"schema": _ERROR_SCHEMA}}},
}
_DASHBOARD = files("orders_query") / "dashboard"


class EventStream(StreamingResponse):
    """Server-Sent Events; `on_close` runs however the response ends, even if it never started."""

    media_type = "text/event-stream"

    def __init__(
        self, frames: AsyncIterator[bytes], on_close: Callable[[], None], status_code: int = 200
    ) -> None:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(frames, status_code, headers=headers)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


def _resume_from(header: str | None, query: str | None) -> str | None:
    after = header or query
    if after is not None:
        try:
            position_key(after)
        except InvalidPosition:
            raise HTTPException(400, "Last-Event-ID is not a position this service handed out") from None
    return after


def _status(raw: str) -> OrderStatus:
    try:
        return OrderStatus(raw.upper())
    except ValueError:
        known = ", ".join(OrderStatus)
        raise HTTPException(400, f"Unknown status {raw!r}; use one of {known}") from None


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    heartbeat = settings.sse_heartbeat_ms / 1000

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.store = store = OrderStore.connect(settings, timeout=REDIS_TIMEOUT)
        # The hub's blocking XREAD (2 s) holds a connection of its own, and does its own retrying.
        reader = Redis.from_url(
            settings.redis_url,
            decode_responses=True,
            retry=Retry(NoBackoff(), 0),
            socket_timeout=REDIS_TIMEOUT + 2,
            socket_connect_timeout=REDIS_TIMEOUT,
        )
        app.state.hub = hub = Hub(
            OrderStore(reader, Keys(settings.redis_key_prefix)), buffer=settings.sse_client_buffer
        )
        await hub.start()
        freeze_startup_heap()
        try:
            yield
        finally:
            await hub.stop()
            await reader.aclose()
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

    index_page = (_DASHBOARD / "index.html").read_text()
    dashboard_page = (
        (_DASHBOARD / "dashboard.html")
        .read_text()
        .replace("{{API_URL}}", html.escape(settings.api_public_url.rstrip("/"), quote=True))
    )

    @app.get("/", include_in_schema=False)
    async def root() -> HTMLResponse:
        return HTMLResponse(index_page)

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(dashboard_page)

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    async def metrics(hub: HubDep) -> str:
        m = hub.metrics
        pool: Any = app.state.store.redis.connection_pool
        return metrics_text(
            "query_",
            {
                "live_subscribers": ("gauge", hub.subscribers, "Event streams open now."),
                "live_streams_total": ("counter", m.streams_total, "Event streams opened."),
                "live_events_sent_total": ("counter", m.events_sent_total, "Events sent to clients."),
                "live_fell_behind_total": (
                    "counter",
                    m.fell_behind_total,
                    "Times a client's buffer filled up and it caught up from Redis.",
                ),
                "live_resets_total": ("counter", m.resets_total, "Reset events sent (position trimmed)."),
                "live_reader_errors_total": ("counter", m.reader_errors_total, "Failed stream reads."),
                "asyncio_tasks": ("gauge", len(asyncio.all_tasks()), "Tasks in the event loop."),
                "redis_connections": (
                    "gauge",
                    len(pool._available_connections) + len(pool._in_use_connections),
                    "Connections in the Redis pool of the reads (the stream reader has one more).",
                ),
                "redis_connections_in_use": (
                    "gauge",
                    len(pool._in_use_connections),
                    "Connections of that pool taken by a request now.",
                ),
            },
        )

    @direct(
        app,
        "GET",
        "/api/orders",
        summary="All orders, newest first",
        response_model=ListEnvelope[Order],
        responses=_ERRORS,
        openapi_extra={"parameters": _PAGE_PARAMETERS},
    )
    async def list_orders(request: Request) -> Response:
        store: OrderStore = request.app.state.store
        limit, cursor = _page_parameters(request)
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
        wanted = _status(status)
        return await _page(store, store.keys.by_status(wanted), limit, cursor, f" in status {wanted}")

    @app.get(
        "/api/orders/stats",
        summary="Orders per status, and orders placed per second over the last seconds",
        responses=_ERRORS,
    )
    async def stats(
        store: StoreDep,
        seconds: Annotated[int, Query(ge=1, le=3600, description="How many seconds of rate.")] = 300,
    ) -> Response:
        """`counts` per status, `perSecond` (orders created in each second, oldest first,
        the first starting at `since`, epoch milliseconds), `now` (the server's clock) and
        `position`: follow `/api/orders/events` from it to keep the numbers current."""
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

    @app.get(
        "/api/orders/events",
        summary="Live feed of every transition (Server-Sent Events), optionally filtered",
        response_class=EventStream,
        responses=_SSE_DOC,
    )
    async def feed(
        store: StoreDep,
        hub: HubDep,
        last_event_id: LastEventId = None,
        last_event_id_query: LastEventIdQuery = None,
        user_id: Annotated[int | None, Query(alias="userId", ge=1, le=MAX_USER_ID)] = None,
        status: Annotated[str | None, Query(max_length=32, description="A status, case-insensitive")] = None,
    ) -> Response:
        """Every transition from now on (or after `Last-Event-ID`), oldest first. A fresh stream
        starts with an id-only event: the position it starts from."""
        after = _resume_from(last_event_id, last_event_id_query)
        wanted = _status(status) if status else None

        def match(event: Event) -> bool:
            return (user_id in (None, event.user_id)) and (wanted in (None, event.status))

        await hub.ready()
        stream = LiveStream(hub, store, None, match, heartbeat)
        start = stream.sub.start
        if after is None:
            frames = stream.frames(b"id: %s\n\n" % start.encode(), start)
        else:
            frames = stream.frames(b"", after, catch_up=True)
        return EventStream(frames, stream.close)

    @app.get(
        "/api/orders/{orderId}/events",
        summary="One order's transitions (Server-Sent Events), from its current state to a final one",
        response_class=EventStream,
        responses={**_SSE_DOC, 204: {"description": "The client already holds the order's final state"}},
    )
    async def order_events(
        store: StoreDep,
        hub: HubDep,
        raw_id: OrderIdPath,
        last_event_id: LastEventId = None,
        last_event_id_query: LastEventIdQuery = None,
    ) -> Response:
        """Starts with the order as it is now (unless resuming with `Last-Event-ID`), then each
        transition as it happens; ends after a final status. An order not known yet (the api
        answers before the processor records it) is waited for."""
        order_id = parse_order_id(raw_id)
        after = _resume_from(last_event_id, last_event_id_query)
        await hub.ready()
        stream = LiveStream(hub, store, order_id, lambda event: True, heartbeat, final=True)
        try:
            snapshot = await store.snapshot(order_id)
        except BaseException:
            stream.close()
            raise
        order = snapshot.order
        if after is None:
            stream.done = order is not None and order.status.is_final
            frames = stream.frames(snapshot_frame(snapshot), snapshot.position or snapshot.head)
        elif (
            order is not None
            and order.status.is_final
            and position_key(snapshot.position or START) <= position_key(after)
        ):
            stream.close()  # 204 also tells a browser's EventSource to stop reconnecting
            return Response(status_code=204)
        else:
            frames = stream.frames(b"", after, catch_up=True)
        return EventStream(frames, stream.close)

    @app.get(
        "/api/orders/{orderId}/history",
        summary="Every transition of an order, oldest first, with its time",
        response_model=Envelope[list[HistoryEntry]],
        responses={**_ERRORS, 404: {"model": ErrorEnvelope, "description": "No such order"}},
    )
    async def history(store: StoreDep, raw_id: OrderIdPath) -> Response:
        order_id = parse_order_id(raw_id)
        entries = await store.history(order_id)
        if not entries:
            raise HTTPException(404, f"Order {order_id} not found")
        return envelope(
            f"{len(entries)} transition{'' if len(entries) == 1 else 's'}",
            [entry.model_dump(mode="json") for entry in entries],
        )

    @direct(
        app,
        "GET",
        "/api/orders/{orderId}",
        summary="One order",
        response_model=Envelope[Order],
        responses={**_ERRORS, 404: {"model": ErrorEnvelope, "description": "No such order"}},
        openapi_extra={"parameters": [ORDER_ID_PARAMETER]},
    )
    async def get_order(request: Request) -> Response:
        store: OrderStore = request.app.state.store
        order_id = parse_order_id(request.path_params["orderId"])
        order = await store.get_json(order_id)
        if order is None:
            raise HTTPException(404, f"Order {order_id} not found")
        return envelope("Order found", order)

    # Last: routes the router tries before a direct route would cost every request to it.
    app.include_router(health_router({"redis": redis_ping}))
    app.mount("/dashboard/assets", StaticFiles(packages=[("orders_query", "dashboard")]), name="assets")

    return app
