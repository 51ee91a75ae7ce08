"""A fast path for the hot routes: served from the middleware stack, parsed as FastAPI documents them.

A direct route is declared like any FastAPI route, with typed parameters (a
body model, path, query and header parameters or parameter models, and
dependencies that take only the `Request`), so FastAPI writes its OpenAPI from
the models. It is served without the router: Starlette asks every route in
turn and FastAPI wraps each call in its exception middleware, exit stacks and
dependency solving, which on a hot path cost more than the endpoint. Here the
parameters are validated with FastAPI's own `request_params_to_args` and the
body with its model (parsed by `orders_contract.jsonbody.load_json_exact`, which keeps every
number's written decimals and refuses duplicate keys), then the endpoint is
awaited and must return a `Response`.

What a direct route cannot honour is refused when it is declared (a
`TypeError`): route dependencies, response-model filtering (the endpoint
returns its `Response` itself), cookies, background tasks, a `Response`
parameter, dependencies with parameters or sub-dependencies, generator
dependencies, a non-async endpoint. `app.dependency_overrides` is honoured.

The body of a direct route must be JSON (415 otherwise); `max_body_size`
raises or lowers the app's body limit for one route (Starlette's
`RequestBodyLimitMiddleware`, which the app installs).

A request goes to a direct route only when the router would have chosen it
too: no route registered before it takes the same path and method. Its
exceptions go to the app's exception handlers as Starlette's exception
middleware would send them. Used where the bench shows it pays (the README's
Performance section).
"""

import asyncio
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, cast

from fastapi import APIRouter, FastAPI, Request
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import request_params_to_args
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, request_response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from orders_contract.jsonbody import DuplicateKey, load_json_exact

__all__ = ["DirectRoute", "DirectRoutes", "direct", "include"]

_JSON_TYPES = ("application/json", "application/cloudevents+json")

_REFUSED_DEFAULTS: dict[str, object] = {
    "response_model_include": None,
    "response_model_exclude": None,
    "response_model_by_alias": True,
    "response_model_exclude_unset": False,
    "response_model_exclude_defaults": False,
    "response_model_exclude_none": False,
}
"""Route options that only act on a returned object, which a direct route never returns."""


class DirectRoute(APIRoute):
    """An `APIRoute` that `DirectRoutes` serves: documented by FastAPI, called without its machinery."""

    def __init__(
        self, path: str, endpoint: Callable[..., Any], *, max_body_size: int | None = None, **options: Any
    ) -> None:
        name = getattr(endpoint, "__name__", repr(endpoint))
        if not asyncio.iscoroutinefunction(endpoint):
            raise TypeError(f"{name}: a direct route's endpoint must be async")
        if options.get("dependencies"):
            raise TypeError(f"{name}: a direct route takes no route dependencies")
        for option, default in _REFUSED_DEFAULTS.items():
            if options.get(option, default) != default:
                raise TypeError(f"{name}: a direct route returns its Response; {option} cannot apply")
        super().__init__(path, endpoint, **options)
        self.max_body_size = max_body_size
        self.body_model = _body_model(self.dependant, name)
        self.needs = [_request_only(dependency, name) for dependency in self.dependant.dependencies]
        # Only the parts of the request the signature asks for are read (each is parsed on demand).
        self.path_fields = self.dependant.path_params
        self.params: list[tuple[list[Any], Callable[[Request], Any]]] = [
            (fields, source)
            for fields, source in (
                (self.dependant.query_params, _query_params),
                (self.dependant.header_params, _headers),
            )
            if fields
        ]
        _refuse_special_parameters(self.dependant, name)

    async def call(self, request: Request, overrides: Mapping[Any, Any]) -> Response:
        """Validate what the signature declares, then await the endpoint."""
        dependant = self.dependant
        values: dict[str, Any] = {}
        errors: list[Any] = []
        if self.path_fields:  # always present (the path matched): validated one by one
            path = request.path_params
            for field in self.path_fields:
                value, wrong = field.validate(path[field.alias], values, loc=("path", field.alias))
                if wrong:
                    errors += wrong
                else:
                    values[field.name] = value
        for fields, source in self.params:
            found, wrong = request_params_to_args(fields, source(request))
            values.update(found)
            errors += wrong
        if errors:
            raise RequestValidationError(errors)
        if self.body_model is not None:
            values[dependant.body_params[0].name] = await _body(request, self.body_model)
        for param, dependency, is_async in self.needs:
            if overrides and dependency in overrides:
                values[param] = await _solve(overrides[dependency], request)
            else:
                values[param] = (await dependency(request)) if is_async else dependency(request)
        if dependant.request_param_name:
            values[dependant.request_param_name] = request
        response = await self.endpoint(**values)
        if not isinstance(response, Response):
            raise TypeError(f"{self.name}: a direct route must return a Response")
        return response


def direct(
    router: APIRouter, method: str, path: str, *, max_body_size: int | None = None, **options: Any
) -> Callable[[Callable[..., Awaitable[Response]]], Callable[..., Awaitable[Response]]]:
    """`@direct(router, "POST", "/path", summary=...)`: like `@router.post`, as a `DirectRoute`."""

    def register(endpoint: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
        router.add_api_route(path, endpoint, methods=[method], route_class_override=DirectRoute, **options)
        cast(DirectRoute, router.routes[-1]).max_body_size = max_body_size
        return endpoint

    return register


def include(app: FastAPI, *routers: APIRouter) -> None:
    """Add the routers' routes to the app's own route list, in order.

    `app.include_router` adds a router as one opaque route, asked on every
    request; a flat list lets `DirectRoutes` see which routes come before a
    direct one, and the router match each route once.
    """
    for router in routers:
        for route in router.routes:
            if isinstance(route, APIRoute) and route.dependency_overrides_provider is None:
                # As include_router does, so that app.dependency_overrides reach the route:
                # the handler FastAPI built when the route was made holds the provider.
                route.dependency_overrides_provider = app
                route.app = request_response(route.get_route_handler())
            if isinstance(route, APIRoute) and isinstance(
                route.generate_unique_id_function, DefaultPlaceholder
            ):
                # As include_router does: the app's generate_unique_id_function names the operation.
                unique_id = app.router.generate_unique_id_function
                route.unique_id = route.operation_id or _value(unique_id)(route)
            app.router.routes.append(route)


def _value(option: Any) -> Any:
    return option.value if isinstance(option, DefaultPlaceholder) else option


def _query_params(request: Request) -> Any:
    return request.query_params


def _headers(request: Request) -> Any:
    return request.headers


def _body_model(dependant: Dependant, name: str) -> type[BaseModel] | None:
    if not dependant.body_params:
        return None
    if len(dependant.body_params) > 1:
        raise TypeError(f"{name}: a direct route takes one body model")
    model = dependant.body_params[0].field_info.annotation
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"{name}: a direct route's body must be a pydantic model")
    return model


def _request_only(dependency: Dependant, name: str) -> tuple[str, Callable[..., Any], bool]:
    """A dependency a direct route can call: it takes the `Request` and nothing else."""
    has_params = any(
        (
            dependency.path_params,
            dependency.query_params,
            dependency.header_params,
            dependency.cookie_params,
            dependency.body_params,
            dependency.dependencies,
        )
    )
    call = dependency.call
    if has_params or call is None or dependency.name is None or _is_generator(call):
        raise TypeError(f"{name}: a direct route's dependencies take only the Request")
    return dependency.name, call, asyncio.iscoroutinefunction(call)


def _is_generator(call: Callable[..., Any]) -> bool:
    return inspect.isgeneratorfunction(call) or inspect.isasyncgenfunction(call)


def _refuse_special_parameters(dependant: Dependant, name: str) -> None:
    special = (
        dependant.cookie_params,
        dependant.background_tasks_param_name,
        dependant.response_param_name,
        dependant.security_scopes_param_name,
        dependant.http_connection_param_name,
        dependant.websocket_param_name,
    )
    if any(special):
        raise TypeError(f"{name}: a direct route takes path, query, header and body parameters only")


async def _solve(call: Callable[..., Any], request: Request) -> Any:
    """An override of a dependency: called with the request if it takes a parameter."""
    args = (request,) if inspect.signature(call).parameters else ()
    if asyncio.iscoroutinefunction(call):
        return await call(*args)
    return call(*args)


async def _body(request: Request, model: type[BaseModel]) -> BaseModel:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() not in _JSON_TYPES:
        raise HTTPException(415, "Content-Type must be application/json")
    raw = await request.body()
    try:
        # Parsed keeping written decimals and refusing duplicate keys (see load_json_exact);
        # what that parser refuses otherwise, pydantic's reads, with pydantic's answer.
        data = load_json_exact(raw)
    except DuplicateKey as exc:
        error = {"type": "duplicate_key", "loc": ("body",), "msg": str(exc), "input": None}
        raise RequestValidationError([error]) from None
    except (ValueError, RecursionError):
        data = _NOT_PARSED
    try:
        if data is _NOT_PARSED:
            return model.model_validate_json(raw)
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


_NOT_PARSED = object()


_Earlier = tuple[re.Pattern[str] | None, list[BaseRoute]]
"""What the router would try before a direct route: one pattern for the paths of the plain
routes of the same method, and the other routes (mounts), asked as the router asks them."""

_GROUP = re.compile(r"\(\?P<\w+>")


def _any_of(patterns: list[re.Pattern[str]]) -> re.Pattern[str] | None:
    """One pattern matching what any of `patterns` (Starlette's route patterns) matches."""
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{_GROUP.sub('(?:', p.pattern)})" for p in patterns))


class DirectRoutes:
    """Serves the app's `DirectRoute`s from the middleware stack (installed innermost, so the
    body limit and CORS still apply); everything else goes on to the router."""

    def __init__(self, app: ASGIApp, fastapi: FastAPI | None = None) -> None:
        """`fastapi`: the app whose routes are served; by default the one the request is for
        (`scope["app"]`), so that the middleware can be listed before the app exists."""
        self.app = app
        self.fastapi = fastapi
        self._table: dict[str, list[tuple[DirectRoute, _Earlier]]] | None = None
        self._built_for = 0

    def _app(self, scope: Scope) -> FastAPI:
        app: FastAPI = self.fastapi or scope["app"]
        return app

    def _routes(self, scope: Scope) -> dict[str, list[tuple[DirectRoute, _Earlier]]]:
        """Per method, each direct route with what the router would try first (built at the
        first request, and again when the number of routes changes)."""
        routes = self._app(scope).router.routes
        if self._table is None or self._built_for != len(routes):
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
            for route, (paths, others) in self._routes(scope).get(scope["method"], ()):
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
                if route.max_body_size is None:
                    await self._serve(route, scope, receive, send)
                else:  # nested in the app's limit, Starlette's middleware sets this route's
                    serve = partial(self._serve, route)
                    await RequestBodyLimitMiddleware(serve, route.max_body_size)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _serve(self, route: DirectRoute, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        app = self._app(scope)
        try:
            response: Response | None = await route.call(request, app.dependency_overrides)
        except Exception as exc:
            handler = self._handler(app, exc)
            if handler is None:
                raise
            if asyncio.iscoroutinefunction(handler):
                response = await handler(request, exc)
            else:  # as Starlette runs a plain function handler
                plain = cast(Callable[..., Response | None], handler)
                response = await run_in_threadpool(plain, request, exc)
        if response is not None:
            await response(scope, receive, send)

    def _handler(
        self, app: FastAPI, exc: Exception
    ) -> Callable[[Request, Exception], Awaitable[Response]] | None:
        handlers: Mapping[Any, Any] = app.exception_handlers
        # A handler for 500 (like one for Exception) belongs to the server-error middleware.
        if isinstance(exc, HTTPException) and exc.status_code != 500 and exc.status_code in handlers:
            return cast(Callable[[Request, Exception], Awaitable[Response]], handlers[exc.status_code])
        for cls in type(exc).__mro__:
            if cls in handlers and cls not in (Exception, BaseException):
                return cast(Callable[[Request, Exception], Awaitable[Response]], handlers[cls])
        return None
