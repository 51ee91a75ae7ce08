"""Live status streams (Server-Sent Events): every transition, or one order's, resumable with
`Last-Event-ID`. The fan-out behind them is ../live.py."""

from collections.abc import AsyncIterator, Callable
from math import ceil
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from orders_contract.models import MAX_USER_ID, Envelope, StreamTicket
from orders_readmodel.stream import START, InvalidPosition, position_key, split_positions
from orders_web.auth import Auth, Principal
from orders_web.http import OrderIdPath, envelope, parse_order_id

from ..deps import AuthDep, HubDep, PrincipalDep, SettingsDep, StreamsDep, TicketsDep
from ..frames import snapshot_frame
from ..hub import Routed
from ..live import CatchUpBudget, LiveStream
from .orders import parse_status

__all__ = ["TICKET_ROUTES", "EventStream", "router"]

ID_LENGTH = 64 * 42 - 1
"""The longest event id: a feed's, in 64 shards (REDIS_SHARDS at most), 41 characters each
(two numbers below 2**64) and a separator between them."""

LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        max_length=ID_LENGTH,
        description="The `id` of the last event the client holds: the stream resumes after it.",
    ),
]
LastEventIdQuery = Annotated[
    str | None,
    Query(
        alias="lastEventId",
        max_length=ID_LENGTH,
        description="Same as the `Last-Event-ID` header (which wins), for clients that cannot set headers.",
    ),
]

Ticket = Annotated[
    str | None,
    Query(
        max_length=128,
        description="A stream ticket (`POST /api/orders/events/tickets`), for clients that cannot "
        "send `Authorization` (a browser's EventSource); used once.",
    ),
]

_ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorEnvelope"}
_SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "`text/event-stream`: one event per transition (`event` = the status, "
        "`data` = the order as of that transition, `id` = its position in the update stream: on "
        "a feed, in every shard's at once, `_` between them); "
        "comment lines as heartbeats; `event: reset` when the stream does not hold the position "
        "the client resumes from: trimmed by the cap, or ahead of the stream (never handed out).",
        "content": {"text/event-stream": {}},
    },
    # Errors come before any event: a JSON envelope, as everywhere else.
    400: {"description": "Invalid parameter", "content": {"application/json": {"schema": _ERROR_SCHEMA}}},
    503: {"description": "Redis is unavailable", "content": {"application/json": {"schema": _ERROR_SCHEMA}}},
}


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


router = APIRouter(tags=["live"])

TICKET_ROUTES = frozenset({"/api/orders/events", "/api/orders/{orderId}/events"})
"""The routes that take a stream ticket (`?ticket=`) instead of a bearer token."""

CATCH_UP_ENTRIES = 10_000
"""Update stream entries one catch-up of a customer's stream reads at most: further behind
(10 s of 1,000 transitions a second), the stream answers `reset`, as for a trimmed position."""
ENTRIES_PER_REQUEST = 100
"""A customer's catch-up costs one request of their rate limit per this many entries read."""


def _budget(auth: Auth, principal: Principal) -> CatchUpBudget | None:
    """A customer's catch-up is bounded and charged; staff and service clients read all."""
    if principal.reads_all:
        return None

    async def charge(entries: int) -> bool:
        return await auth.charge(principal, ceil(entries / ENTRIES_PER_REQUEST)) is None

    return CatchUpBudget(CATCH_UP_ENTRIES, charge)


@router.get(
    "/api/orders/events",
    summary="Live feed of every transition (Server-Sent Events), optionally filtered",
    response_class=EventStream,
    responses=_SSE_DOC,
)
async def follow_orders(
    streams: StreamsDep,
    hub: HubDep,
    auth: AuthDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    last_event_id: LastEventId = None,
    last_event_id_query: LastEventIdQuery = None,
    user_id: Annotated[int | None, Query(alias="userId", ge=1, le=MAX_USER_ID)] = None,
    status: Annotated[str | None, Query(max_length=32, description="A status, case-insensitive")] = None,
    ticket: Ticket = None,
) -> Response:
    """Every transition from now on (or after `Last-Event-ID`), oldest first (in each shard of
    the read model: an order's transitions are in its shard's stream). A fresh stream
    starts with an id-only event: the position it starts from. A customer's feed carries
    only their own transitions (another `userId` is 404)."""
    after = _resume_from(last_event_id, last_event_id_query, len(streams))
    wanted = parse_status(status) if status else None
    if not principal.reads_all:
        if user_id not in (None, principal.user_id):
            raise HTTPException(404, f"No orders of user {user_id}")
        user_id = principal.user_id

    def match(event: Routed) -> bool:
        return (user_id in (None, event.user_id)) and (wanted in (None, event.status))

    await hub.ready()
    heartbeat = settings.sse_heartbeat_ms / 1000
    stream = LiveStream(hub, streams, None, match, heartbeat, budget=_budget(auth, principal))
    start = stream.start
    if after is None:
        frames = stream.frames(b"id: %s\n\n" % start.encode(), start)
    else:
        frames = stream.frames(b"", after, catch_up=True)
    return EventStream(frames, stream.close)


@router.get(
    "/api/orders/{orderId}/events",
    summary="One order's transitions (Server-Sent Events), from its current state to a final one",
    response_class=EventStream,
    responses={**_SSE_DOC, 204: {"description": "The client already holds the order's final state"}},
)
async def follow_order(
    streams: StreamsDep,
    hub: HubDep,
    auth: AuthDep,
    settings: SettingsDep,
    raw_id: OrderIdPath,
    principal: PrincipalDep,
    last_event_id: LastEventId = None,
    last_event_id_query: LastEventIdQuery = None,
    ticket: Ticket = None,
) -> Response:
    """Starts with the order as it is now (unless resuming with `Last-Event-ID`: one of this
    stream's ids, or a feed's), then each transition as it happens; ends after a final status.
    An order not known yet (the api answers before the processor records it) is waited for by
    staff and service clients; to a customer, another user's order and an unknown one are both 404."""
    order_id = parse_order_id(raw_id)
    shard = streams[0].keys.shard_of(order_id)
    updates = streams[shard]  # the order's shard's: its event ids are that shard's positions
    after = _resume_from(last_event_id, last_event_id_query, len(streams), shard)

    def match(event: Routed) -> bool:
        return principal.may_read(event.user_id)

    await hub.ready()
    heartbeat = settings.sse_heartbeat_ms / 1000
    budget = _budget(auth, principal)
    stream = LiveStream(hub, [updates], order_id, match, heartbeat, final=True, budget=budget)
    try:
        snapshot = await updates.snapshot(order_id)
    except BaseException:
        stream.close()
        raise
    order = snapshot.order
    # A customer gets 404 for another user's order and for one not recorded yet alike, so
    # that the answer never confirms that someone else's order exists. Their own order is
    # recorded before the api's 202 (only a failed write-through makes them retry).
    if (order is None and not principal.reads_all) or (
        order is not None and not principal.may_read(order.user_id)
    ):
        stream.close()
        raise HTTPException(404, f"Order {order_id} not found")
    if after is None:
        stream.done = order is not None and order.status.is_final
        frames = stream.frames(snapshot_frame(snapshot), snapshot.position or snapshot.head)
    elif (
        order is not None
        and order.status.is_final
        and position_key(snapshot.position or START) <= position_key(after) <= position_key(snapshot.head)
    ):
        stream.close()  # 204 also tells a browser's EventSource to stop reconnecting
        return Response(status_code=204)
    else:
        frames = stream.frames(b"", after, catch_up=True)
    return EventStream(frames, stream.close)


@router.post(
    "/api/orders/events/tickets",
    summary="A single-use ticket for a live stream, for clients that cannot send headers (EventSource)",
    status_code=201,
    response_model=Envelope[StreamTicket],
    responses={503: _SSE_DOC[503]},
)
async def create_stream_ticket(tickets: TicketsDep, principal: PrincipalDep) -> Response:
    """Send it as `?ticket=` on `GET /api/orders/events` or `/api/orders/{orderId}/events`
    within `expiresIn` seconds; it opens one stream, once, as the principal of the token
    that asked for it. No token ever goes in a URL."""
    ticket = await tickets.issue(principal)
    data = {"ticket": ticket, "expiresIn": tickets.ttl_s}
    return envelope("Stream ticket", data, status_code=201)


def _resume_from(header: str | None, query: str | None, shards: int, shard: int | None = None) -> str | None:
    """The position the client resumes from (`Last-Event-ID`), or 400. On a feed (`shard` None):
    a position in each of `shards` shards, joined with `_`. On an order's stream (its order's
    `shard`): that shard's position, or a feed's (every shard's), whose position in `shard` it is."""
    after = header or query
    if after is None:
        return None
    try:
        if shard is None:
            split_positions(after, shards)
        elif "_" in after:
            return split_positions(after, shards)[shard]
        else:
            position_key(after)
    except InvalidPosition:
        raise HTTPException(400, "Last-Event-ID is not a position this service handed out") from None
    return after
