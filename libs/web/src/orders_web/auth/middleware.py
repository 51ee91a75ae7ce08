"""The access control of one app (`Auth`) and the middleware that applies it to every request.

`AuthMiddleware` runs before the routes (the fast path's included): it answers
401 (no or bad token, in the envelope, with `WWW-Authenticate`), 403 (a token
that names no user), 429 (over the principal's rate limit) or 503 (the
provider or Redis cannot answer), or puts the `Principal` in the request's
state for `get_principal`. Requests to the app's public paths pass untouched.

Browsers' `EventSource` cannot send headers: a route the app names as taking
stream tickets accepts `?ticket=` instead of a bearer token, redeemed by the
app's `TicketRedeemer`. The services' access logs are off; `redact_query`
keeps a ticket out of any line uvicorn's access logger would write.
"""

import logging
from collections.abc import Iterable
from typing import Protocol
from urllib.parse import parse_qsl, urlencode

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from orders_contract.keys import Keys
from orders_contract.settings import AuthSettings
from orders_web.auth.principal import ANONYMOUS, AuthError, Principal
from orders_web.auth.ratelimit import Limited, RateLimiter
from orders_web.auth.tokens import ProviderUnavailable, Verifier
from orders_web.http import envelope, redis_error_text, unavailable

__all__ = [
    "TOOLKIT_PUBLIC_PATHS",
    "TOOLKIT_PUBLIC_PREFIXES",
    "Auth",
    "AuthMiddleware",
    "TicketRedeemer",
    "redact_query",
]

log = logging.getLogger(__name__)

TOOLKIT_PUBLIC_PATHS = frozenset(
    {
        "/docs",
        "/docs/oauth2-redirect",
        "/docs/oauth2-audience.js",
        "/openapi.json",
        "/metrics",  # meant for the internal network (README, Security)
    }
)
"""What this toolkit serves in every app without a token: Swagger UI, the OpenAPI document, metrics."""

TOOLKIT_PUBLIC_PREFIXES = ("/health/", "/docs/assets/")
"""The same for path prefixes: health checks, Swagger UI's static files."""


class TicketRedeemer(Protocol):
    """Turns a stream ticket into the principal it was issued to (an AuthError if it cannot)."""

    async def redeem(self, ticket: str) -> Principal: ...


class Auth:
    """The access control of one app, made by its `create_app` with what only the app knows:
    the paths it serves without a token (besides the toolkit's own) and the routes (path
    templates, as declared) that take a stream ticket. Started and stopped by the lifespan."""

    def __init__(
        self,
        settings: AuthSettings,
        public_paths: Iterable[str] = (),
        public_prefixes: Iterable[str] = (),
        ticket_routes: Iterable[str] = (),
        tickets: TicketRedeemer | None = None,
    ) -> None:
        self.settings = settings
        self.enabled = settings.auth_mode == "oidc"
        self.public_paths = TOOLKIT_PUBLIC_PATHS | frozenset(public_paths)
        self.public_prefixes = (*TOOLKIT_PUBLIC_PREFIXES, *public_prefixes)
        self.ticket_routes = frozenset(ticket_routes)
        self.tickets = tickets
        self.verifier: Verifier | None = None
        self.limiter = RateLimiter(settings)
        self._client: httpx.AsyncClient | None = None

    def is_public(self, path: str) -> bool:
        return path in self.public_paths or path.startswith(self.public_prefixes)

    async def start(self, redis: "Redis", keys: Keys) -> None:
        self.limiter.start(redis, keys)
        if self.enabled:
            self._client = httpx.AsyncClient(follow_redirects=False)
            self.verifier = Verifier(self.settings, self._client)
            await self.verifier.start()

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def authenticate(self, scope: Scope) -> Principal:
        """The request's principal, from its bearer token or (ticket routes) its stream ticket."""
        if not self.enabled:
            return ANONYMOUS
        token = _bearer(scope)
        if token is None and self.tickets is not None and self._takes_tickets(scope):
            ticket = _query_value(scope, "ticket")
            if ticket is not None:
                return await self.tickets.redeem(ticket)
        if token is None:
            raise AuthError("A bearer token is required", code="")
        assert self.verifier is not None, "Auth.start was not awaited"
        return await self.verifier.principal(token)

    async def charge(self, principal: Principal, requests: int = 1) -> Limited | None:
        """Count requests against the principal's rate limit (`RateLimiter.charge`)."""
        return await self.limiter.charge(principal, requests)

    def _takes_tickets(self, scope: Scope) -> bool:
        """Whether a ticket route takes the request (its path and method): only there is a
        ticket used up, never by a path merely shaped like one."""
        routes = scope["app"].router.routes if "app" in scope else ()
        return any(
            getattr(route, "path", None) in self.ticket_routes and route.matches(scope)[0] is Match.FULL
            for route in routes
        )


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = bytes(value).decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthError("The Authorization header must be `Bearer <token>`")
            return token.strip()
    return None


def _query_value(scope: Scope, name: str) -> str | None:
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    for key, value in parse_qsl(query):
        if key == name:
            return value
    return None


class AuthMiddleware:
    """Authenticates every request to a non-public path and counts it against its principal's
    rate limit, before any route (the fast path's included) runs. In AUTH_MODE=none it only
    passes requests on (every request is ANONYMOUS's: `get_principal`'s default)."""

    def __init__(self, app: ASGIApp, auth: Auth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        auth = self.auth
        if (
            not auth.enabled
            or scope["type"] != "http"
            or scope["method"] == "OPTIONS"
            or auth.is_public(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        try:
            principal = await auth.authenticate(scope)
            limited = await auth.charge(principal)
        except AuthError as exc:
            await envelope(exc.message, status_code=exc.status, headers=exc.headers)(scope, receive, send)
            return
        except ProviderUnavailable as exc:
            log.warning("cannot verify a token, the provider is unavailable: %s", exc)
            await unavailable("The identity provider is unavailable; try again shortly")(scope, receive, send)
            return
        except RedisError as exc:
            log.warning("rate limit not counted, redis unavailable: %s", redis_error_text(exc))
            await unavailable("The order store is unavailable; try again shortly")(scope, receive, send)
            return
        if limited is not None:
            headers = {"Retry-After": str(limited.retry_after)}
            await envelope("Too many requests", status_code=429, headers=headers)(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


def redact_query(record: logging.LogRecord) -> bool:
    """A logging filter: a stream ticket in a URL's query string (the ticket routes take one;
    one sent anywhere else is not used up) is replaced by `[redacted]` in uvicorn's access
    log lines."""
    args = record.args
    if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
        path, _, query = args[2].partition("?")
        params: Iterable[tuple[str, str]] = parse_qsl(query, keep_blank_values=True)
        safe = urlencode([(k, "[redacted]" if k == "ticket" else v) for k, v in params])
        record.args = (*args[:2], f"{path}?{safe}", *args[3:])
    return True
