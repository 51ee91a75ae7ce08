"""HTTP pieces the services share: the envelope, error handling, limits, health."""

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Any, TypeVar, cast

import orjson
from fastapi import APIRouter, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orders_contract.models import Envelope, ErrorEnvelope, utc_now
from orders_contract.reports import Liveness, Readiness
from orders_web.fastpath import DirectRoutes

__all__ = [
    "MAX_BODY_BYTES",
    "NO_TELEMETRY",
    "REDIS_REFUSALS",
    "Check",
    "Checks",
    "NotReady",
    "OrderIdPath",
    "body_limit_middleware",
    "cors_middleware",
    "envelope",
    "field_errors",
    "health_router",
    "install_common",
    "install_error_handlers",
    "parse_order_id",
    "redis_error_text",
    "redis_refusal",
    "redis_write_check",
    "state_getter",
    "unavailable",
    "validation_failed",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BODY_BYTES = 64 * 1024

NO_TELEMETRY: Any = {"tracing": False, "metrics": False, "logs": False}
"""FastAPI's built-in OpenTelemetry hooks, off: they cost a provider look-up on every request."""
RETRY_AFTER_SECONDS = 1

Check = Callable[[], Awaitable[object]]
Checks = Callable[[Request], Mapping[str, Check]]
"""What readiness checks, given a request (the app's clients live in its state)."""


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


OrderIdPath = Annotated[
    str,
    Path(
        alias="orderId",
        max_length=64,
        description="The order's id (a UUID).",
        json_schema_extra={"format": "uuid"},
    ),
]


def state_getter(name: str, kind: type[T]) -> Callable[[Request], T]:
    """A dependency returning `app.state.<name>` (a client the app's lifespan made), typed as `kind`:
    `StoreDep = Annotated[OrderStore, Depends(state_getter("store", OrderStore))]`."""

    def get(request: Request) -> T:
        return cast(T, getattr(request.app.state, name))

    get.__name__ = get.__qualname__ = f"get_{name}"
    return get


def parse_order_id(value: str) -> str:
    """The canonical form of an order id from a path; 400 when it is not a UUID."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise HTTPException(400, "orderId must be a UUID") from None


def field_errors(exc: ValidationError | RequestValidationError) -> list[dict[str, str]]:
    """Pydantic's errors as `{field, reason}` pairs a client can show next to its inputs."""
    errors = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path", "header")]
        reason = str(error.get("msg", "invalid"))
        if error.get("type") == "extra_forbidden":
            reason = "unknown field"
        elif error.get("type") == "json_invalid":
            loc, reason = [], f"malformed JSON: {error.get('ctx', {}).get('error', 'invalid')}"
        errors.append({"field": ".".join(loc) or "body", "reason": reason})
    return errors


REDIS_REFUSALS = frozenset(
    {
        *("OOM", "READONLY", "LOADING", "BUSY", "MASTERDOWN", "NOREPLICAS"),
        *("TRYAGAIN", "CLUSTERDOWN", "MOVED", "ASK"),  # Redis Cluster's
    }
)
"""Error codes of a Redis that refuses a command for a reason of its own, not the client's:
full (maxmemory with noeviction), a read-only replica, loading its data, busy in a script,
cut off from its primary or its cluster, or pointing elsewhere (cluster redirections)."""

_PIPELINE_PREFIX = re.compile(r"^Command # \d+ \(.*?\) of pipeline caused error: \(['\"]", re.DOTALL)
"""How redis-py's pipelines prefix the message of a command's error."""


def redis_error_text(exc: BaseException) -> str:
    """A Redis error as one readable line, its code first ("OOM command not allowed ..."):
    redis-py's repr says only "server:OutOfMemoryError", and its pipelines wrap the message."""
    raw = str(exc.args[0]) if exc.args else ""
    text, wrapped = _PIPELINE_PREFIX.subn("", raw, count=1)
    if wrapped:
        text = text.rstrip(",)'\"")  # the end of the wrapped tuple
    code = getattr(exc, "status_code", None)  # redis-py strips the codes it knows from the message
    line = f"{code} {text}" if code and not text.startswith(code) else text
    return " ".join(line.split()) or type(exc).__name__


def redis_refusal(exc: BaseException) -> str | None:
    """The code (one of REDIS_REFUSALS) when `exc` is Redis refusing a command for a reason
    of its own; None for any other error (a bug of ours, a wrong type, a script error)."""
    if not isinstance(exc, RedisError):
        return None
    code = redis_error_text(exc).split(" ", 1)[0]
    return code if code in REDIS_REFUSALS else None


class NotReady(Exception):
    """A readiness check's failure whose message is what `/health/ready` shows after "down: "."""


def redis_write_check(probe: Check) -> Check:
    """Readiness of a service that writes to Redis: `probe` makes a small write; a Redis that
    refuses it (full, read-only, loading ...) shows as "down: refuses writes (OOM ...)"."""

    async def check() -> None:
        try:
            await probe()
        except RedisError as exc:
            if redis_refusal(exc) is None:
                raise
            raise NotReady(f"refuses writes ({redis_error_text(exc)})") from exc

    return check


def validation_failed(exc: ValidationError | RequestValidationError) -> Response:
    return envelope("Validation failed", status_code=400, errors=field_errors(exc))


def unavailable(message: str) -> Response:
    return envelope(message, status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


class _BodyLimit:
    """Starlette's `RequestBodyLimitMiddleware` for the requests that may carry a body (a GET,
    HEAD or OPTIONS skips its per-request wrapping, which showed on the hot reads), with the
    one answer it gives in plain text, a body declared over the limit, put in the envelope."""

    def __init__(self, app: ASGIApp, max_body_size: int) -> None:
        self.app = app
        self.limited = RequestBodyLimitMiddleware(app, max_body_size=max_body_size)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _NO_BODY:
            await self.app(scope, receive, send)
            return
        replaced = False

        async def in_envelope(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return  # the plain text body of the answer replaced
            if message["type"] == "http.response.start" and message["status"] == 413:
                content_type = dict(message.get("headers", ())).get(b"content-type", b"")
                if content_type.startswith(b"text/plain"):
                    replaced = True
                    too_large = envelope("Request body is too large", status_code=413)
                    await too_large(scope, receive, send)
                    return
            await send(message)

        await self.limited(scope, receive, in_envelope)


_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS"})


def _count_redis_error(request: Request) -> None:
    """Counts a request that failed on Redis in the app's metrics (`app.state.metrics`), if any."""
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.redis_errors.labels("request").inc()


def install_common(app: FastAPI, cors_origins: str = "") -> None:
    """Error handlers that keep every answer in the envelope, the fast path, Starlette's
    body limit (64 KiB; a direct route may set its own) and, when origins are named, CORS
    (for an app that lists no middleware of its own: the processor's health app)."""
    install_error_handlers(app)
    app.add_middleware(DirectRoutes)  # the first added is the innermost
    app.add_middleware(_BodyLimit, max_body_size=MAX_BODY_BYTES)
    for cors in reversed(cors_middleware(cors_origins)):
        app.add_middleware(cors.cls, *cors.args, **cors.kwargs)


def cors_middleware(cors_origins: str) -> list[Middleware]:
    """CORS for the comma-separated origins; none (an empty list) when no origin is named."""
    origins = [o.strip() for o in cors_origins.split(",") if o.strip()]
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=["Location", "Retry-After"],
        )
    ]


def body_limit_middleware() -> Middleware:
    """Starlette's body limit (64 KiB; a direct route may set its own), its 413 in the envelope."""
    return Middleware(_BodyLimit, max_body_size=MAX_BODY_BYTES)


def install_error_handlers(app: FastAPI) -> None:
    """Error handlers that keep every answer in the envelope: HTTP errors, invalid requests,
    Redis down or refusing (503), anything unexpected (500)."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return envelope(str(exc.detail), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        return validation_failed(exc)

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def redis_down(request: Request, exc: Exception) -> Response:
        _count_redis_error(request)
        log.warning("redis unavailable on %s %s: %s", request.method, request.url.path, redis_error_text(exc))
        return unavailable("The order store is unavailable; try again shortly")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return envelope("Internal server error", status_code=500)

    @app.exception_handler(ResponseError)
    async def redis_refused(request: Request, exc: Exception) -> Response:
        # Redis full, read-only, loading, busy, redirecting: not the client's fault and
        # passing, so a 503 to retry, and one line in the log (no traceback: not a bug).
        if redis_refusal(exc) is None:
            return await unexpected(request, exc)  # any other error reply is a bug of ours
        _count_redis_error(request)
        log.warning("redis refused on %s %s: %s", request.method, request.url.path, redis_error_text(exc))
        return unavailable("The order store refuses requests for now; try again shortly")


def health_router(checks: Checks, timeout: float = 2.0) -> APIRouter:
    """`/health/live` (the process answers) and `/health/ready` (every dependency answers)."""
    router = APIRouter(prefix="/health", tags=["health"])

    @router.get("/live", summary="The process is up", response_model=Envelope[Liveness])
    async def get_liveness() -> Response:
        return envelope("live", {"status": "live"})

    @router.get(
        "/ready",
        summary="Every dependency answers",
        response_model=Envelope[Readiness],
        responses={503: {"model": ErrorEnvelope, "description": "A dependency does not answer"}},
    )
    async def get_readiness(request: Request) -> Response:
        wanted = checks(request)
        names: Sequence[str] = list(wanted)
        outcomes = await asyncio.gather(
            *(asyncio.wait_for(wanted[name](), timeout) for name in names), return_exceptions=True
        )
        status = {name: _health(outcome) for name, outcome in zip(names, outcomes, strict=True)}
        if all(value == "ok" for value in status.values()):
            return envelope("ready", status)
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        return envelope("not ready", status, status_code=503, headers=headers)

    return router


def _health(outcome: object) -> str:
    """One check's line in `/health/ready`: "ok", or "down: " and why."""
    if not isinstance(outcome, BaseException):
        return "ok"
    if isinstance(outcome, NotReady):
        return f"down: {outcome}"
    if isinstance(outcome, RedisError):  # its repr names only the class
        return f"down: {type(outcome).__name__}: {redis_error_text(outcome)}"
    return f"down: {outcome!r}"
