"""Limits on slow, idle, huge and too many HTTP connections: uvicorn's httptools protocol, extended.

uvicorn (httptools) closes a keep-alive connection idle after a response, but nothing else:
a connection that never sends, a request head or body sent one byte every few seconds and a
head of any size are all kept, and httptools buffers a header value whole before handing it over.
`LimitedHttpToolsProtocol` adds, per connection:

- an idle timeout: a connection that sends nothing for `idle_timeout` seconds, from its start
  or from the end of its previous response, is closed (silently: there is no request to answer);
- a header-read deadline: a request head (request line and headers) not complete
  `header_timeout` seconds after the connection started, or after the previous response ended,
  gets 408 and the connection is closed; bytes that trickle in do not move the deadline;
- a body-read deadline: a request body not complete `body_timeout` seconds after its head was
  gets 408 and the connection is closed (or, if the app has already started its response, the
  connection is just closed); bytes that trickle in do not move it either. Only a body being
  read is timed: a response, however long (an event stream), never is. A pipelined request's
  body has `body_timeout` from when its request starts (the one before it done), and until
  then its deadline, when passed, is pushed back by `body_timeout` (an answer then would go
  into the previous response); so is it while the server itself has paused reading (an app
  not yet taking a large body: not the client's fault);
- a head size cap: a head over `max_header_bytes` gets 431 (counted while it arrives, so no
  more than the cap and two socket reads of a head are ever buffered);
- a connection cap: a connection accepted while the process already has `max_connections`
  open is answered 503 with `Retry-After` at once, without reading its request, and closed;
- requests the parser rejects get 400. Every one of these answers is the envelope.

After such an answer the connection is half-closed: the answer and a FIN are sent, what the
client still sends is read and dropped, and the socket is closed when the client closes it or
`LINGER_SECONDS` later (closing with unread data would send a reset that can destroy the
answer before the client reads it).

One timer per connection serves both deadlines; it fires at least every `min(header_timeout,
body_timeout)` while one is pending, so any deadline set later is never earlier than it.

Costs on the hot path: one timestamp per request, two flags, and, for a head that spans several
socket reads, a length sum; a timer only for a body that spans several reads; no per-byte work.
Pass `limited_protocol(limits)` as uvicorn's `http=`.
"""

import asyncio
import functools
import logging
from asyncio import TimerHandle
from dataclasses import dataclass
from typing import Any, cast

import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from orders_contract.models import utc_now
from orders_web.http import RETRY_AFTER_SECONDS

__all__ = ["LINGER_SECONDS", "HttpLimits", "LimitedHttpToolsProtocol", "limited_protocol"]

log = logging.getLogger(__name__)

LINGER_SECONDS = 2.0
"""How long a refused connection is read (and dropped) for, at most, before it is closed."""


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The limits of one server (see the module's text); settings.HttpSettings holds the defaults."""

    header_timeout: float
    idle_timeout: float
    max_header_bytes: int
    max_connections: int
    body_timeout: float


_last_refusal_log = -1e9


def _log_refusal(now: float, cap: int) -> None:
    """A warning when connections are refused, at most once every 10 s (a flood would flood the log)."""
    global _last_refusal_log
    if now - _last_refusal_log >= 10:
        _last_refusal_log = now
        log.warning("%d connections open: refusing new ones with 503", cap)


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a head over the cap."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of `HttpLimits` (see the module's text)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: HttpLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        # uvicorn's keep-alive timeout is the idle timeout after a response; also armed at start.
        self.timeout_keep_alive = limits.idle_timeout  # type: ignore[assignment]
        self._head_bytes = 0  # bytes of the current head in reads that held nothing else
        self._head_spans = False  # the current head did not arrive in one read
        self._read_bytes = 0  # size of the read being parsed
        self._head_deadline: float | None = None  # loop time by which a head must be complete
        self._awaited_after: RequestResponseCycle | None = None  # the head awaited is the one after
        self._in_body = False  # the current request's head is complete, its body is not
        self._body_deadline: float | None = None  # loop time by which that body must be complete
        self._tick = min(limits.header_timeout, limits.body_timeout)  # the timer's longest delay
        self._timer: TimerHandle | None = None  # the one timer of both deadlines
        self._too_large = False
        self._refused = False  # answered and half-closed: what arrives is dropped
        self._linger: TimerHandle | None = None

    # The hot path: four overrides, a few attribute reads each (`HttpToolsProtocol.x(self)`, a
    # little cheaper than super()). "In a head" is read off uvicorn's scope: made when a request
    # begins, given its "method" when the head is complete. "In a body": from the head's end to
    # the message's (the same read for a request without a body: no deadline, no timer).

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the connection is lingering: drop what the client still sends
        scope: Any = self.scope  # (a dict: the TypedDict's "method" is not always there)
        in_head = scope is not None and "method" not in scope
        self._read_bytes = len(data)
        HttpToolsProtocol.data_received(self, data)
        scope = self.scope
        if scope is not None and "method" not in scope and not self._refused:  # the read ends in a head
            self._head_spans = True
            if in_head:  # ... that began in an earlier read: all of this read is head
                self._head_bytes += len(data)
                if self._head_bytes > self.limits.max_header_bytes:
                    self._refuse_too_large()
        elif self._in_body and self._body_deadline is None and not self._refused:
            # A body began in this read and did not end in it: from now, it has body_timeout.
            self._body_deadline = self.loop.time() + self.limits.body_timeout
            if self._timer is None:
                self._timer = self.loop.call_later(self._tick, self._deadline_passed)

    def on_headers_complete(self) -> None:
        if self._head_spans or self._read_bytes > self.limits.max_header_bytes:
            # Rare (a head in several reads, or a read over the cap): measure the head.
            self._head_spans = False
            self._head_bytes = 0
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > self.limits.max_header_bytes:
                self._too_large = True
                raise _HeadTooLarge  # httptools stops; uvicorn calls send_400_response
        HttpToolsProtocol.on_headers_complete(self)
        self._in_body = True

    def on_message_complete(self) -> None:
        HttpToolsProtocol.on_message_complete(self)
        self._in_body = False
        self._body_deadline = None

    def on_response_complete(self) -> None:
        HttpToolsProtocol.on_response_complete(self)
        if self.timeout_keep_alive_task is not None:  # uvicorn now waits for the next request
            self._head_deadline = self.loop.time() + self.limits.header_timeout  # _wait_for_head, inline
            self._awaited_after = self.cycle
            if self._timer is None:
                self._timer = self.loop.call_later(self._tick, self._deadline_passed)
        elif self._body_deadline is not None:  # a pipelined request starts with its body not in
            self._body_deadline = self.loop.time() + self.limits.body_timeout

    # Connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            _log_refusal(self.loop.time(), self.limits.max_connections)
            self._refuse(
                503,
                "Too many connections; try again shortly",
                b"retry-after: %d\r\n" % RETRY_AFTER_SECONDS,
            )
            return
        self.timeout_keep_alive_task = self.loop.call_later(
            self.limits.idle_timeout, self.timeout_keep_alive_handler
        )
        self._wait_for_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_deadline = self._body_deadline = None
        for timer in (self._timer, self._linger):
            if timer is not None:
                timer.cancel()
        self._timer = self._linger = None
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        """The connection becomes a WebSocket's (when a WebSocket library is installed; none is):
        neither deadline applies to it any more."""
        self._head_deadline = self._body_deadline = None
        self._in_body = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to what the parser rejects (a callback's error included), in the envelope."""
        if self._too_large:
            self._refuse_too_large()
        else:
            self._refuse(400, "Invalid HTTP request")

    # Limits

    def _wait_for_head(self) -> None:
        """From now, the next request's head has `header_timeout` to arrive (a timer already
        set fires earlier than that, and sets itself again)."""
        self._head_deadline = self.loop.time() + self.limits.header_timeout
        self._awaited_after = self.cycle
        if self._timer is None:
            self._timer = self.loop.call_later(self._tick, self._deadline_passed)

    def _deadline_passed(self) -> None:
        """The timer of both deadlines: act on one that passed, or set itself again for the
        nearest (at most `_tick` ahead: a deadline set before it fires is never earlier)."""
        self._timer = None
        if self._refused or self.transport.is_closing():
            return
        now = self.loop.time()
        head = self._head_deadline
        if head is not None and self.cycle is not self._awaited_after:  # the head came
            head = self._head_deadline = None
        if head is not None and head <= now:
            self._head_late()
            return
        body = self._body_deadline
        if body is not None and body <= now:
            if not self.pipeline and not self.flow.read_paused:
                self._body_late()
                return
            # Its request waits for the one before it (being answered: a 408 now would go into
            # that answer), or the server is not reading (the app has not taken what came):
            # another period from now.
            body = self._body_deadline = now + self.limits.body_timeout
        if head is None:
            if body is None:
                return  # nothing awaited: a request or a long response is being served
            nearest = body
        else:
            nearest = head if body is None else min(head, body)
        self._timer = self.loop.call_later(min(nearest - now, self._tick), self._deadline_passed)

    def _head_late(self) -> None:
        if self.timeout_keep_alive_task is not None:
            # Nothing received since the wait began (any byte cancels the idle timer): idle.
            self.transport.close()
            return
        log.info("request head not complete in %.1f s: closing", self.limits.header_timeout)
        self._refuse(408, "Request head not received in time")

    def _body_late(self) -> None:
        log.info("request body not complete in %.1f s: closing", self.limits.body_timeout)
        cycle = self.cycle
        if cycle.response_started:  # the app answers already: an answer now would corrupt it
            self._refused = True
            self._body_deadline = None
            self.transport.close()
            return
        # The app gets a disconnect (it can answer nothing more); the answer is the 408 here.
        cycle.disconnected = True
        cycle.message_event.set()
        self._refuse(408, "Request body not received in time")

    def _refuse_too_large(self) -> None:
        log.info("request head over %d bytes: 431", self.limits.max_header_bytes)
        self._refuse(
            431, f"Request header fields are too large (at most {self.limits.max_header_bytes} bytes)"
        )

    def _refuse(self, status: int, message: str, extra_headers: bytes = b"") -> None:
        """Answer `status` in the envelope, half-close and linger (see the module's text); while a
        request is being served on this connection, answer nothing more (see below)."""
        if self._refused:
            return
        self._refused = True
        self._head_deadline = self._body_deadline = None
        self._unset_keepalive_if_required()
        transport = self.transport
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and not cycle.disconnected:
            # A request is being served.
            if cycle.more_body:  # ... and its body is what failed: disconnect it (as uvicorn does)
                transport.close()
            else:  # ... a later one failed: close the connection once the response is complete
                cycle.keep_alive = False
            return
        body = orjson.dumps({"success": False, "message": message, "data": None, "timestamp": utc_now()})
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body),
            extra_headers,
            b"connection: close\r\n\r\n",
            body,
        ]
        transport.write(b"".join(head))
        if transport.can_write_eof():
            transport.write_eof()
            self._linger = self.loop.call_later(LINGER_SECONDS, transport.close)
        else:  # pragma: no cover - TLS
            transport.close()


def limited_protocol(limits: HttpLimits) -> type[asyncio.Protocol]:
    """What to pass as uvicorn's `http=`: the protocol with these limits (picklable, so that
    uvicorn's worker processes get it too)."""
    return cast(type[asyncio.Protocol], functools.partial(LimitedHttpToolsProtocol, limits=limits))
