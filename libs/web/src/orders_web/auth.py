"""Access control: who is calling (an OpenID Connect access token, or nobody in `AUTH_MODE=none`),
and how many requests they may make.

- `AUTH_MODE=oidc`: every request but the public ones (`PUBLIC_PATHS`,
  `PUBLIC_PREFIXES`: health, the docs, the OpenAPI document, the dashboard's
  static files, `/metrics`) needs `Authorization: Bearer <JWT access token>`
  from the provider named by `OIDC_ISSUER`. The token is verified with PyJWT
  against the provider's JWKS (found through its discovery document, fetched
  with httpx without blocking the event loop, cached, fetched again for an
  unknown `kid` at most every `OIDC_JWKS_MIN_REFETCH_S`): RS256 or ES256 only,
  `iss`, `aud`, `exp` and `nbf` checked with `OIDC_CLOCK_SKEW_S` of leeway.
  Verified tokens are cached (bounded, never past their `exp`).
- `AUTH_MODE=none`: everyone is `ANONYMOUS`, who may do everything (the
  tutorial's open API). A service bound to a non-loopback address refuses to
  start in `none` unless `AUTH_MODE=none` was set explicitly.

`AuthMiddleware` runs before the routes (the fast path's included): it
answers 401 (no or bad token, in the envelope, with `WWW-Authenticate`), 429
(too many requests from one principal, counted in Redis per fixed window, so
the limit holds across workers and services) or puts the `Principal` in the
request's state, where routes read it (`get_principal`, a dependency that
takes only the request). What each principal may do is decided by the routes
with the `Principal`'s methods; a customer reading another user's order gets
404, so the ids of others' orders are never confirmed.

Browsers' `EventSource` cannot send headers: `issue_ticket` makes a
short-lived, single-use stream ticket (random, stored in Redis only as its
SHA-256, consumed with GETDEL), which the live routes accept as `?ticket=`.
The services' access logs are off; `redact_query` keeps a ticket out of any
log line uvicorn's access logger would write.
"""

import asyncio
import enum
import hashlib
import ipaddress
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterable
from copy import deepcopy
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import jwt
import orjson
from fastapi import FastAPI, HTTPException, Request
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from orders_contract.keys import Keys
from orders_contract.models import MAX_USER_ID
from orders_contract.settings import AuthSettings
from orders_readmodel.batching import ScriptBatcher
from orders_web.http import envelope, redis_error_text, redis_refusal, unavailable

__all__ = [
    "ANONYMOUS",
    "PUBLIC_PATHS",
    "PUBLIC_PREFIXES",
    "Auth",
    "AuthError",
    "AuthMiddleware",
    "Principal",
    "Role",
    "check_bind",
    "get_principal",
    "install_auth",
    "is_public",
    "redact_query",
]

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset(
    {
        "/",  # the api's redirect to /docs, the query service's index page
        "/docs",
        "/docs/oauth2-redirect",
        "/docs/oauth2-audience.js",
        "/openapi.json",
        "/asyncapi.json",
        "/asyncapi",  # the event contract's readable page
        "/metrics",  # meant for the internal network (README, Security)
        "/dashboard",  # the page; everything it reads needs a token
    }
)
"""Paths served without a token, exactly; with `PUBLIC_PREFIXES`, the one list of exemptions."""

PUBLIC_PREFIXES = ("/health/", "/docs/assets/", "/dashboard/assets/", "/asyncapi/assets/")
"""Path prefixes served without a token: health checks and static files."""

_STREAM_ROUTES = frozenset({"/api/orders/events", "/api/orders/{orderId}/events"})
"""The live routes, which accept a stream ticket (`?ticket=`) as well as a bearer token."""


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _is_stream(scope: Scope) -> bool:
    """Whether the request goes to a live route (its path and method): only there is a ticket
    used up, never by a path merely shaped like one."""
    routes = scope["app"].router.routes if "app" in scope else ()
    return any(
        getattr(route, "path", None) in _STREAM_ROUTES and route.matches(scope)[0] is Match.FULL
        for route in routes
    )


def check_bind(settings: AuthSettings, bind_host: str) -> None:
    """Refuse to serve the open API on a non-loopback address unless AUTH_MODE=none was
    set on purpose; refuse oidc without an issuer or audience."""
    if settings.auth_mode == "oidc":
        if not settings.oidc_issuer or not settings.oidc_audience:
            raise RuntimeError("AUTH_MODE=oidc needs OIDC_ISSUER and OIDC_AUDIENCE")
        return
    if "auth_mode" not in settings.model_fields_set and not _loopback(bind_host):
        raise RuntimeError(
            f"refusing to serve without access control on {bind_host}: set AUTH_MODE=oidc "
            "(with OIDC_ISSUER and OIDC_AUDIENCE), or AUTH_MODE=none explicitly"
        )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Role(enum.StrEnum):
    ANONYMOUS = "anonymous"
    """AUTH_MODE=none: anyone, who may do everything."""
    CUSTOMER = "customer"
    STAFF = "staff"
    SERVICE = "service"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who makes a request: the token's subject, the user it acts as, and its role."""

    subject: str
    user_id: int | None
    role: Role

    @property
    def reads_all(self) -> bool:
        """Every order, every feed, the statistics (staff, service clients; anyone in none)."""
        return self.role is not Role.CUSTOMER

    def may_read(self, user_id: int) -> bool:
        return self.reads_all or user_id == self.user_id

    def may_place_for(self, user_id: int) -> bool:
        return self.role in (Role.ANONYMOUS, Role.SERVICE) or user_id == self.user_id

    def may_cancel(self, user_id: int) -> bool:
        return self.role in (Role.ANONYMOUS, Role.STAFF) or user_id == self.user_id

    @property
    def idempotency_owner(self) -> str:
        """What an Idempotency-Key belongs to besides the order's user: '' in none mode (the
        tutorial's keys, per user), else the token's subject."""
        return "" if self.role is Role.ANONYMOUS else f"{self.role}:{self.subject}"

    def to_json(self) -> bytes:
        return orjson.dumps({"sub": self.subject, "userId": self.user_id, "role": self.role.value})

    @classmethod
    def from_json(cls, raw: str | bytes) -> "Principal":
        data = orjson.loads(raw)
        return cls(str(data["sub"]), data["userId"], Role(data["role"]))


ANONYMOUS = Principal("anonymous", None, Role.ANONYMOUS)


class AuthError(Exception):
    """A request without a usable identity: 401 (or 403 for a token that names no user)."""

    def __init__(self, message: str, status: int = 401, code: str = "invalid_token") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    @property
    def headers(self) -> dict[str, str]:
        if self.status != 401:
            return {}
        if self.code == "":
            return {"WWW-Authenticate": "Bearer"}
        return {"WWW-Authenticate": f'Bearer error="{self.code}", error_description="{self.message}"'}


class ProviderUnavailable(Exception):
    """The provider's discovery document or keys cannot be read (a 503, retried)."""


_REASONS: list[tuple[type[jwt.InvalidTokenError], str]] = [
    (jwt.ExpiredSignatureError, "The token has expired"),
    (jwt.ImmatureSignatureError, "The token is not valid yet"),
    (jwt.InvalidIssuerError, "The token's issuer is not accepted"),
    (jwt.InvalidAudienceError, "The token's audience is not accepted"),
    (jwt.MissingRequiredClaimError, "The token lacks a required claim"),
    (jwt.InvalidSignatureError, "The token's signature does not verify"),
]


class Verifier:
    """Verifies access tokens of one OpenID Connect provider."""

    def __init__(self, settings: AuthSettings, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self.client = client
        self.issuer = settings.oidc_issuer.rstrip("/")
        self.algorithms = frozenset(a.strip() for a in settings.oidc_algorithms.split(",") if a.strip())
        self.roles_claims = [c.strip() for c in settings.oidc_roles_claims.split(",") if c.strip()]
        self.token_endpoint: str | None = None
        self._issuer_claim = settings.oidc_issuer
        self._jwks_uri: str | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = -1e9
        self._refresh: asyncio.Task[None] | None = None
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    async def start(self) -> None:
        """Read the discovery document and keys once (a provider that does not answer yet
        only gets a warning: the first token fetches them)."""
        try:
            await self._refetch()
        except ProviderUnavailable as exc:
            log.warning("OpenID Connect provider not reachable at start (retried on use): %s", exc)

    async def principal(self, token: str) -> Principal:
        if len(token) > self.settings.oidc_max_token_bytes:
            raise AuthError("The token is too large")
        now = time.time()
        cached = self._cache.get(token)
        if cached is not None:
            if cached[1] > now:
                return cached[0]
            del self._cache[token]
        claims = await self._verify(token)
        exp = _checked_claims(claims)
        principal = self._principal(claims)
        self._remember(token, principal, exp, now)
        return principal

    async def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise AuthError("The token is malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise AuthError(f"The token's algorithm is not accepted (use one of {sorted(self.algorithms)})")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise AuthError("The token names no signing key (kid)")
        key = await self._key(kid)
        if key is None:
            raise AuthError("The token's signing key is unknown")
        if key.algorithm_name != alg:
            raise AuthError("The token's algorithm does not match its key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.settings.oidc_audience,
                issuer=self._issuer_claim,
                leeway=self.settings.oidc_clock_skew_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.InvalidTokenError as exc:
            for kind, reason in _REASONS:
                if isinstance(exc, kind):
                    raise AuthError(reason) from None
            raise AuthError("The token is malformed") from None
        return claims

    def _principal(self, claims: dict[str, Any]) -> Principal:
        s = self.settings
        roles: set[str] = set()
        for name in self.roles_claims:
            value = claims.get(name)
            if isinstance(value, str):
                roles.update(value.split())
            elif isinstance(value, list):
                roles.update(v for v in value if isinstance(v, str))
        raw = claims.get(s.oidc_user_claim)
        user_id = _user_id(raw)
        subject = str(claims["sub"])
        if s.oidc_staff_role in roles:
            return Principal(subject, user_id, Role.STAFF)
        if s.oidc_service_role in roles:
            return Principal(subject, user_id, Role.SERVICE)
        if user_id is None:
            raise AuthError(f"The token carries no user id ({s.oidc_user_claim})", status=403)
        return Principal(subject, user_id, Role.CUSTOMER)

    def _remember(self, token: str, principal: Principal, exp: float, now: float) -> None:
        s = self.settings
        if s.oidc_token_cache_s <= 0 or s.oidc_token_cache_size <= 0:
            return
        self._cache[token] = (principal, min(exp, now + s.oidc_token_cache_s))
        while len(self._cache) > s.oidc_token_cache_size:
            self._cache.popitem(last=False)

    async def _key(self, kid: str) -> jwt.PyJWK | None:
        now = time.monotonic()
        stale = now - self._fetched_at > self.settings.oidc_jwks_cache_s
        unknown = kid not in self._keys
        if stale or (unknown and now - self._fetched_at >= self.settings.oidc_jwks_min_refetch_s):
            try:
                await self._shared_refetch()
            except ProviderUnavailable as exc:
                if not self._keys:
                    raise
                log.warning("cannot refresh the provider's keys (using the ones held): %s", exc)
        if not self._keys:  # never read (the provider was down, the refetch waits its turn)
            raise ProviderUnavailable("no signing keys of the provider are held yet")
        return self._keys.get(kid)

    async def _shared_refetch(self) -> None:
        """One fetch for every caller that asks while it is on its way."""
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.create_task(self._refetch())
        await asyncio.shield(self._refresh)

    async def _refetch(self) -> None:
        self._fetched_at = time.monotonic()  # also after a failure: the rate limit holds
        timeout = self.settings.oidc_timeout_s
        try:
            if self._jwks_uri is None:
                response = await self.client.get(
                    f"{self.issuer}/.well-known/openid-configuration", timeout=timeout
                )
                response.raise_for_status()
                discovery = response.json()
                if str(discovery.get("issuer", "")).rstrip("/") != self.issuer:
                    raise ProviderUnavailable(
                        f"the discovery document names issuer {discovery.get('issuer')!r}"
                    )
                self._issuer_claim = str(discovery["issuer"])
                self.token_endpoint = discovery.get("token_endpoint")
                self._jwks_uri = str(discovery["jwks_uri"])
            response = await self.client.get(self._jwks_uri, timeout=timeout)
            response.raise_for_status()
            keys = jwt.PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError, jwt.PyJWKSetError) as exc:
            raise ProviderUnavailable(f"{type(exc).__name__}: {exc}") from None
        self._keys = {
            key.key_id: key
            for key in keys.keys
            if key.key_id and key.algorithm_name in self.algorithms and key.public_key_use in (None, "sig")
        }


_LATEST_TIME = 253402300799
"""9999-12-31T23:59:59Z: a NumericDate past it is no time a provider writes."""


def _numeric_date(value: object) -> bool:
    """A JSON number of seconds (RFC 7519 NumericDate) in 0..9999-12-31: not a string, a bool,
    NaN or a number no float holds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return 0 <= value <= _LATEST_TIME  # False for NaN and the infinities too


def _checked_claims(claims: dict[str, Any]) -> float:
    """The token's `exp`, once its registered claims have the types and ranges RFC 7519 gives
    them (PyJWT takes `"exp": "123"` and any integer); an AuthError (401) if not."""
    for name in ("exp", "nbf", "iat"):
        if (name in claims or name == "exp") and not _numeric_date(claims.get(name)):
            raise AuthError(f"The token's {name} claim is not a valid time")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.strip():
        raise AuthError("The token's subject (sub) is not valid")
    return float(claims["exp"])


def _user_id(raw: object) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str) and raw.isascii() and raw.isdigit():
        raw = int(raw)
    if isinstance(raw, int) and 1 <= raw <= MAX_USER_ID:
        return raw
    return None


@dataclass(frozen=True, slots=True)
class Limited:
    retry_after: int


class Auth:
    """The access control of one app: made in `install_auth`, started by the app's lifespan
    (`await auth.start(redis, keys)`) and stopped there."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.enabled = settings.auth_mode == "oidc"
        self.verifier: Verifier | None = None
        self._client: httpx.AsyncClient | None = None
        self._redis: ScriptBatcher | None = None
        self._keys = Keys()

    async def start(self, redis: "Redis", keys: Keys) -> None:
        self._redis = ScriptBatcher(redis)
        self._keys = keys
        if self.enabled:
            self._client = httpx.AsyncClient(follow_redirects=False)
            self.verifier = Verifier(self.settings, self._client)
            await self.verifier.start()

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def authenticate(self, scope: Scope) -> Principal:
        """The request's principal, from its bearer token or (live routes) its stream ticket."""
        if not self.enabled:
            return ANONYMOUS
        token = _bearer(scope)
        if token is None and _is_stream(scope):
            ticket = _query_value(scope, "ticket")
            if ticket is not None:
                return await self._use_ticket(ticket)
        if token is None:
            raise AuthError("A bearer token is required", code="")
        assert self.verifier is not None, "Auth.start was not awaited"
        return await self.verifier.principal(token)

    async def limit(self, principal: Principal) -> Limited | None:
        """Count the request against the principal's window; `Limited` once over the limit."""
        return await self.charge(principal, 1)

    async def charge(self, principal: Principal, requests: int) -> Limited | None:
        """Count `requests` against the principal's window (a request that costs as much as
        several: a live stream's catch-up); `Limited` once over the limit."""
        s = self.settings
        allowed = s.rate_limit_requests if principal.role is Role.CUSTOMER else s.rate_limit_trusted_requests
        if principal.role is Role.ANONYMOUS or allowed == 0 or requests <= 0:
            return None
        assert self._redis is not None
        now = time.time()
        window = int(now // s.rate_limit_window_s)
        key = self._keys.rate_limit(_digest(principal.idempotency_owner), window)
        # One round trip: the count, and the expiry (NX: set once) that only cleans up, as the
        # window's key is named by its number; sent with every count so no key outlives it.
        counting = asyncio.gather(
            self._redis.command("INCRBY", key, requests),
            self._redis.command("EXPIRE", key, s.rate_limit_window_s * 2, "NX"),
        )
        try:
            count = int((await counting)[0])
        except RedisError as exc:
            if redis_refusal(exc) not in ("OOM", "READONLY"):
                raise
            # A full or read-only Redis still serves reads: the limit is not counted meanwhile.
            log.warning("rate limit not counted, redis refuses writes: %s", redis_error_text(exc))
            return None
        if count <= allowed:
            return None
        return Limited(max(1, int((window + 1) * s.rate_limit_window_s - now + 0.999)))

    async def issue_ticket(self, principal: Principal) -> str:
        """A single-use stream ticket for `principal`, valid `STREAM_TICKET_TTL_S` seconds."""
        assert self._redis is not None
        ticket = secrets.token_urlsafe(32)
        key = self._keys.stream_ticket(_digest(ticket))
        await self._redis.command("SET", key, principal.to_json(), "EX", self.settings.stream_ticket_ttl_s)
        return ticket

    async def _use_ticket(self, ticket: str) -> Principal:
        assert self._redis is not None
        if len(ticket) > 128:
            raise AuthError("The stream ticket is unknown, used or expired")
        raw = await self._redis.command("GETDEL", self._keys.stream_ticket(_digest(ticket)))
        if raw is None:
            raise AuthError("The stream ticket is unknown, used or expired")
        return Principal.from_json(raw)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


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


def get_principal(request: Request) -> Principal:
    """The request's principal (a dependency: `PrincipalDep` in each service's deps.py)."""
    principal = request.scope.get("state", {}).get("principal")
    if isinstance(principal, Principal):
        return principal
    auth = getattr(request.app.state, "auth", None)
    if auth is not None and auth.enabled:  # a route the middleware let through as public
        raise HTTPException(401, "A bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    return ANONYMOUS


class AuthMiddleware:
    """Authenticates every request to a non-public path and counts it against its principal's
    rate limit, before any route (the fast path's included) runs."""

    def __init__(self, app: ASGIApp, fastapi: FastAPI) -> None:
        self.app = app
        self.fastapi = fastapi

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        auth: Auth = self.fastapi.state.auth
        try:
            principal = await auth.authenticate(scope)
            limited = await auth.limit(principal)
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


_ERROR_REF = {"$ref": "#/components/schemas/ErrorEnvelope"}


def install_auth(app: FastAPI, settings: AuthSettings) -> Auth:
    """Access control for `app`: `app.state.auth`, the middleware (inside CORS, so browsers
    can read a 401, outside everything else), and in oidc mode the OpenAPI security schemes
    Swagger UI's Authorize offers. The lifespan must `start` and `stop` the returned `Auth`."""
    app.state.auth = auth = Auth(settings)
    logging.getLogger("uvicorn.access").addFilter(redact_query)
    if auth.enabled:  # in none mode every request is ANONYMOUS's (get_principal's default)
        cors = [n for n, m in enumerate(app.user_middleware) if _is_cors(m)]
        app.user_middleware.insert(cors[0] + 1 if cors else 0, Middleware(AuthMiddleware, fastapi=app))
        _document_security(app, auth)
        if settings.oidc_swagger_client_id:
            app.swagger_ui_init_oauth = {"clientId": settings.oidc_swagger_client_id}
    return auth


def _is_cors(middleware: Middleware) -> bool:
    cls: object = middleware.cls
    return cls is CORSMiddleware


def _document_security(app: FastAPI, auth: Auth) -> None:
    """Every operation but the public ones needs a bearer token (or the client-credentials
    flow against the provider's token endpoint) and may answer 401, 403 and 429."""
    make = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = deepcopy(make())
        app.openapi_schema = None  # built again below, with the security schemes
        schemes: dict[str, Any] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "An access token of the provider (`make token USER=7` prints one).",
            }
        }
        token_url = auth.settings.oidc_token_url or (auth.verifier.token_endpoint if auth.verifier else None)
        if token_url:
            s = auth.settings
            scopes = {s.oidc_service_role: "A service client: places orders for any user"}
            schemes["clientCredentials"] = {
                "type": "oauth2",
                "flows": {"clientCredentials": {"tokenUrl": token_url, "scopes": scopes}},
            }
        schema.setdefault("components", {})["securitySchemes"] = schemes
        schema["security"] = [{name: []} for name in schemes]
        errors = {
            "401": "No token, or one that is not valid (see `message`)",
            "403": "The token's principal may not do this",
            "429": "Too many requests from this principal; retry after `Retry-After`",
        }
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                if is_public(path):
                    operation["security"] = []
                    continue
                responses = operation.setdefault("responses", {})
                for code, description in errors.items():
                    responses.setdefault(
                        code,
                        {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}},
                    )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    script = _AUDIENCE_JS.replace("AUDIENCE", orjson.dumps(auth.settings.oidc_audience).decode())

    async def audience_js(request: Request) -> Response:
        return Response(script, media_type="text/javascript", headers={"X-Content-Type-Options": "nosniff"})

    app.add_route("/docs/oauth2-audience.js", audience_js, methods=["GET"], include_in_schema=False)
    app.state.swagger_ui_scripts = ["/docs/oauth2-audience.js"]


_AUDIENCE_JS = """"use strict";
// Swagger UI's client-credentials request carries only grant_type and scope, and providers such
// as Ory Hydra put an audience in the token only when the request names one: add ours.
(() => {
  const audience = AUDIENCE;
  const wrap = () => {
    if (typeof ui === "undefined") return setTimeout(wrap, 50);
    const configs = ui.getConfigs();
    const previous = configs.requestInterceptor;
    configs.requestInterceptor = (request) => {
      const body = request.body;
      const asked = typeof body === "string" && body.includes("grant_type=client_credentials");
      if (asked && !body.includes("audience=")) {
        request.body = `${body}&audience=${encodeURIComponent(audience)}`;
      }
      return previous ? previous(request) : request;
    };
  };
  wrap();
})();
"""


def redact_query(record: logging.LogRecord) -> bool:
    """A logging filter: a stream ticket in a URL's query string (the live routes take one;
    one sent anywhere else is not used up) is replaced by `[redacted]` in uvicorn's access
    log lines."""
    args = record.args
    if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
        path, _, query = args[2].partition("?")
        params: Iterable[tuple[str, str]] = parse_qsl(query, keep_blank_values=True)
        safe = urlencode([(k, "[redacted]" if k == "ticket" else v) for k, v in params])
        record.args = (*args[:2], f"{path}?{safe}", *args[3:])
    return True
