"""Stream tickets: how a browser's `EventSource`, which cannot send headers, opens a live stream.

`POST /api/orders/events/tickets` (with a bearer token) issues one: random,
valid `STREAM_TICKET_TTL_S` seconds, single-use, standing for the principal
that asked. The live routes take it as `?ticket=` (the app names them to
`Auth` as its ticket routes). Redis holds only its SHA-256 and gives it back
once (`orders_readmodel.tickets`).
"""

import secrets

from redis.asyncio import Redis

from orders_contract.keys import Keys
from orders_readmodel.tickets import TicketStore
from orders_web.auth import AuthError, Principal

__all__ = ["MAX_TICKET_CHARS", "StreamTickets"]

MAX_TICKET_CHARS = 128
"""A longer `?ticket=` is refused without asking Redis (issued ones have 43)."""


class StreamTickets:
    """Issues and redeems the query service's stream tickets (an `orders_web.auth.TicketRedeemer`)."""

    def __init__(self, ttl_s: int) -> None:
        self.ttl_s = ttl_s
        self._store: TicketStore | None = None

    def start(self, redis: "Redis", keys: Keys) -> None:
        self._store = TicketStore(redis, keys)

    @property
    def _tickets(self) -> TicketStore:
        assert self._store is not None, "StreamTickets.start was not called"
        return self._store

    async def issue(self, principal: Principal) -> str:
        """A single-use stream ticket for `principal`, valid `ttl_s` seconds."""
        ticket = secrets.token_urlsafe(32)
        await self._tickets.put(ticket, principal.to_json(), self.ttl_s)
        return ticket

    async def redeem(self, ticket: str) -> Principal:
        """The principal the ticket was issued to, using it up; AuthError (401) if it is
        unknown, used or expired."""
        raw = await self._tickets.take(ticket) if len(ticket) <= MAX_TICKET_CHARS else None
        if raw is None:
            raise AuthError("The stream ticket is unknown, used or expired")
        return Principal.from_json(raw)
