"""HTTP pieces both FastAPI services share: the envelope, error handling, limits, health."""

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Annotated, Any, cast

import orjson
from fastapi import APIRouter, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .models import ErrorEnvelope, utc_now

__all__ = [
    "MAX_BODY_BYTES",
    "NO_TELEMETRY",
    "ORDER_ID_PARAMETER",
    "BodySizeLimit",
    "Check",
    "Cors",
    "DirectRoute",
    "DirectRoutes",
    "OrderIdPath",
    "direct",
    "envelope",
    "field_errors",
    "health_router",
    "install_common",
    "metrics_text",
    "parse_order_id",
    "unavailable",
    "validation_failed",
]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024

NO_TELEMETRY: Any = {"tracing": False, "metrics": False, "logs": False}
"""FastAPI's built-in OpenTelemetry hooks, off: they cost a provider look-up on every request."""
RETRY_AFTER_SECONDS = 1

Check = Callable[[], Awaitable[object]]


def envelope(
    message: str,
    data: Any = None,
    *,
    status_code: int = 200,
    success: bool | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    """The tutorial's envelope as a response; `data` must already be JSON-ready."""
    body = {
        "success": status_code < 400 if success is None else success,
        "message": message,
        "data": data,
        "timestamp": utc_now(),
        **extra,
    }
    return Response(orjson.dumps(body), status_code, headers, media_type="application/json")


ORDER_ID_PARAMETER = {
    "name": "orderId",
    "in": "path",
    "required": True,
    "description": "The order's id (a UUID).",
    "schema": {"type": "string", "format": "uuid", "maxLength": 64},
}
"""`orderId` as an OpenAPI parameter, for direct routes (which document their parameters by hand)."""

OrderIdPath = Annotated[
    str,
    Path(
        alias="orderId",
        max_length=64,
        description="The order's id (a UUID).",
        json_schema_extra={"format": "uuid"},
    ),
]


def parse_order_id(value: str) -> str:
    """The canonical form of an order id from a path; 400 when it is not a UUID."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise HTTPException(400, "orderId must be a UUID") from None


Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class DirectRoute(APIRoute):
    """A route whose endpoint takes the `Request` alone and returns a `Response`.

    FastAPI calls it as it is: no dependencies to solve, no parameters to parse,
    no response model to serialize on each request. Its parameters, body and
    answers are only documented (`openapi_extra`, `responses`). For hot paths.
    """

    def get_route_handler(self) -> Endpoint:
        return cast(Endpoint, self.endpoint)


def direct(app: FastAPI, method: str, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
    """`@direct(app, "POST", "/path", summary=...)`: like `@app.post`, as a `DirectRoute`."""

    def register(endpoint: Endpoint) -> Endpoint:
        if not asyncio.iscoroutinefunction(endpoint):
            raise TypeError(f"{endpoint.__name__}: a direct route's endpoint must be async")
        app.router.add_api_route(
            path, endpoint, methods=[method], route_class_override=DirectRoute, **options
        )
        return endpoint

    return register


def field_errors(exc: ValidationError | RequestValidationError) -> list[dict[str, str]]:
    """Pydantic's errors as `{field, reason}` pairs a client can show next to its inputs."""
    errors = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path")]
        reason = str(error.get("msg", "invalid"))
        if error.get("type") == "extra_forbidden":
            reason = "unknown field"
        elif error.get("type") == "json_invalid":
            loc, reason = [], f"malformed JSON: {error.get('ctx', {}).get('error', 'invalid')}"
        errors.append({"field": ".".join(loc) or "body", "reason": reason})
    return errors


def validation_failed(exc: ValidationError | RequestValidationError) -> Response:
    return envelope("Validation failed", status_code=400, errors=field_errors(exc))


def unavailable(message: str) -> Response:
    return envelope(message, status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


class BodySizeLimit:
    """Answers 413 to a request body over the limit, declared or streamed, before the app reads it.

    `limits` sets other limits for some paths (a batch endpoint, say).
    """

    def __init__(
        self, app: ASGIApp, limit: int = MAX_BODY_BYTES, limits: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.default = limit
        self.limits = dict(limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.default)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._too_large(limit, scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._too_large(limit, scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: Message | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> Message:
            nonlocal body
            if body is None:
                return await receive()
            message, body = body, None
            return message

        await self.app(scope, replay, send)

    async def _too_large(self, limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        response = envelope(f"Request body is larger than {limit // 1024} KiB", status_code=413)
        await response(scope, receive, send)


_Earlier = tuple[re.Pattern[str] | None, list[BaseRoute]]
"""What the router would try before a direct route: one pattern for the paths of the plain
routes (of the same method), and other routes (mounts, included routers) that are asked as
the router asks (register those after the direct routes: asking them costs)."""

_GROUP = re.compile(r"\(\?P<\w+>")


def _any_of(patterns: list[re.Pattern[str]]) -> re.Pattern[str] | None:
    """One pattern matching what any of `patterns` (Starlette's route patterns) matches."""
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{_GROUP.sub('(?:', p.pattern)})" for p in patterns))


class DirectRoutes:
    """Serves the app's `DirectRoute`s from the middleware stack, without the router.

    Starlette finds a route by asking every route in turn, then FastAPI wraps the
    call in its exception middleware and an exit stack: on a hot path that costs more
    than the endpoint. Installed innermost, inside CORS and the body limit, which
    still apply. A request goes to a direct route only when the router would have
    chosen it too: no route registered before it takes the path and method; anything
    else goes on to the router. An endpoint's exception goes to the app's handler for
    it, as Starlette's exception middleware would send it; one without a handler (a
    bug) goes on up to the app's handler for `Exception`, the 500.
    """

    def __init__(self, app: ASGIApp, fastapi: FastAPI) -> None:
        self.app = app
        self.fastapi = fastapi
        self._table: dict[str, list[tuple[DirectRoute, _Earlier]]] | None = None
        self._built_for = 0

    def _routes(self) -> dict[str, list[tuple[DirectRoute, _Earlier]]]:
        """Per method, each direct route with what the router would try first (built at the
        first request, as routes are added after the middleware, and again when their number
        changes; a route replaced in place is not noticed)."""
        routes = self.fastapi.router.routes
        if self._table is None or self._built_for != len(routes):  # routes added or removed
            self._built_for = len(routes)
            table: dict[str, list[tuple[DirectRoute, _Earlier]]] = {}
            for n, route in enumerate(routes):
                if not isinstance(route, DirectRoute):
                    continue
                for method in route.methods or ():
                    paths = [
                        other.path_regex
                        for other in routes[:n]
                        if isinstance(other, Route) and (not other.methods or method in other.methods)
                    ]
                    others = [o for o in routes[:n] if not isinstance(o, Route | WebSocketRoute)]
                    table.setdefault(method, []).append((route, (_any_of(paths), others)))
            self._table = table
        return self._table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            path = scope["path"]
            for route, (paths, others) in self._routes().get(scope["method"], ()):
                match = route.path_regex.match(path)
                if match is None:
                    continue
                if (paths and paths.match(path)) or any(o.matches(scope)[0] is Match.FULL for o in others):
                    break  # the router picks another route: let it
                scope["path_params"] = {
                    key: route.param_convertors[key].convert(value)
                    for key, value in match.groupdict().items()
                }
                scope["endpoint"] = route.endpoint
                scope["route"] = route
                request = Request(scope, receive, send)
                try:
                    response: Response | None = await route.endpoint(request)
                except Exception as exc:
                    handler = self._handler(exc)
                    if handler is None:
                        raise
                    if asyncio.iscoroutinefunction(handler):
                        response = await handler(request, exc)
                    else:  # as Starlette runs a plain function handler
                        response = await run_in_threadpool(
                            cast(Callable[..., Response | None], handler), request, exc
                        )
                if response is not None:
                    await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _handler(self, exc: Exception) -> Callable[[Request, Exception], Awaitable[Response]] | None:
        handlers: Mapping[Any, Any] = self.fastapi.exception_handlers
        # A handler for 500 (like one for Exception) belongs to the server-error middleware.
        if isinstance(exc, HTTPException) and exc.status_code != 500 and exc.status_code in handlers:
            return cast(Callable[[Request, Exception], Awaitable[Response]], handlers[exc.status_code])
        for cls in type(exc).__mro__:
            if cls in handlers and cls not in (Exception, BaseException):
                return cast(Callable[[Request, Exception], Awaitable[Response]], handlers[cls])
        return None


_VARY_ORIGIN = (b"vary", b"Origin")


class Cors(CORSMiddleware):
    """Starlette's CORS middleware, with a cheap path for the usual request that carries no
    `Origin` (not from a browser page, or same-origin): its answer only gets `Vary: Origin`,
    as Starlette would give it, without Starlette's per-answer header rewriting."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or any(name == b"origin" for name, _ in scope["headers"]):
            await super().__call__(scope, receive, send)
            return

        async def vary(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if any(name.lower() == b"vary" for name, _ in headers):
                    merged = MutableHeaders(raw=list(headers))
                    merged["Vary"] = ", ".join([*merged.getlist("Vary"), "Origin"])
                    message["headers"] = merged.raw
                else:
                    message["headers"] = [*headers, _VARY_ORIGIN]
            await send(message)

        await self.app(scope, receive, vary)


def install_common(
    app: FastAPI, cors_origins: str = "", body_limits: Mapping[str, int] | None = None
) -> None:
    """Error handlers that keep every answer in the envelope, the body limit and CORS.

    `body_limits` raises (or lowers) the 64 KiB body limit for some paths.
    """

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return envelope(str(exc.detail), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        return validation_failed(exc)

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def redis_down(request: Request, exc: Exception) -> Response:
        log.warning("redis unavailable: %s", exc)
        return unavailable("The order store is unavailable; try again shortly")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return envelope("Internal server error", status_code=500)

    app.add_middleware(DirectRoutes, fastapi=app)  # the first added is the innermost
    app.add_middleware(BodySizeLimit, limits=body_limits)
    origins = [o.strip() for o in cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            Cors,
            allow_origins=origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=["Location", "Retry-After"],
        )


def metrics_text(prefix: str, metrics: Mapping[str, tuple[str, float, str]]) -> str:
    """Prometheus text format: `{name: (counter or gauge, value, help)}`, each name under `prefix`."""
    lines = []
    for name, (kind, value, text) in metrics.items():
        lines += [f"# HELP {prefix}{name} {text}", f"# TYPE {prefix}{name} {kind}", f"{prefix}{name} {value}"]
    return "\n".join(lines) + "\n"


def health_router(checks: Mapping[str, Check], timeout: float = 2.0) -> APIRouter:
    """`/health/live` (the process answers) and `/health/ready` (every dependency answers)."""
    router = APIRouter(prefix="/health", tags=["health"])

    @router.get("/live", summary="The process is up")
    async def live() -> Response:
        return envelope("live", {"status": "live"})

    @router.get(
        "/ready",
        summary="Every dependency answers",
        responses={503: {"model": ErrorEnvelope, "description": "A dependency does not answer"}},
    )
    async def ready() -> Response:
        names: Sequence[str] = list(checks)
        outcomes = await asyncio.gather(
            *(asyncio.wait_for(checks[name](), timeout) for name in names), return_exceptions=True
        )
        status = {
            name: "ok" if not isinstance(outcome, BaseException) else f"down: {outcome!r}"
            for name, outcome in zip(names, outcomes, strict=True)
        }
        if all(value == "ok" for value in status.values()):
            return envelope("ready", status)
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        return envelope("not ready", status, status_code=503, headers=headers)

    return router
