"""The FastAPI and uvicorn internals that orders_web builds on, pinned to the versions it was written
against, so that an upgrade fails here, with what to re-check, and not in a deployment.

- `orders_web.fastpath` (direct routes) calls FastAPI's `request_params_to_args`, registers
  its routes with `add_api_route(route_class_override=...)`, reads `Dependant` and `APIRoute`
  fields, validates path parameters with `ModelField.validate(..., loc=...)` and nests
  Starlette's `RequestBodyLimitMiddleware`.
- `orders_web.limits` (the connection limits every server runs, wired by `orders_web.serving`)
  subclasses uvicorn's `HttpToolsProtocol`, overrides its parser callbacks and reads its
  attributes and those of its `RequestResponseCycle`, and answers with its `STATUS_LINE`.

Each version is checked twice: `constraints.txt` must still pin what the code was written
against (bumping the pin fails here), and what is installed must be what `constraints.txt`
pins (an install that ignored the constraints fails here). After re-checking the code against
the new version's source (the messages say what), update `WRITTEN_AGAINST`.

Should either go (the fast path for plain FastAPI routes, or the protocol for uvicorn's own),
delete its section below and its `WRITTEN_AGAINST` and `RECHECK` entries (fastapi and starlette
for the fast path; uvicorn and httptools for the protocol).
"""

import asyncio
import dataclasses
import importlib
import inspect
from importlib.metadata import version
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from fastapi import APIRouter
from starlette.responses import Response

ROOT = Path(__file__).resolve().parents[3]
CONSTRAINTS = ROOT / "constraints.txt"

FASTPATH = "orders_web.fastpath"
LIMITS = "orders_web.limits"

WRITTEN_AGAINST = {
    # fastpath.py: FastAPI's dependency solving and routing, Starlette's routing and body limit.
    "fastapi": "0.163.2",
    "starlette": "1.10.0",
    # limits.py: uvicorn's httptools protocol, and httptools' parser raising from a callback.
    "uvicorn": "0.54.0",
    "httptools": "0.9.0",
}

RECHECK = {
    "fastapi": (
        f"{FASTPATH} (direct routes) was written against FastAPI {WRITTEN_AGAINST['fastapi']}: "
        "re-read the new fastapi/dependencies/utils.py (request_params_to_args, solve_dependencies: "
        "what a direct route must still do as FastAPI does), fastapi/dependencies/models.py "
        "(Dependant's fields), fastapi/routing.py (APIRoute, add_api_route's route_class_override, "
        "include_router, request_response) and fastapi/_compat (ModelField.validate); run "
        "libs/web/tests/test_fastpath.py and the OpenAPI contract tests, and `make bench` to see "
        "the fast path still gains 20% or more over plain routes; then update WRITTEN_AGAINST"
    ),
    "starlette": (
        f"{FASTPATH} was written against Starlette {WRITTEN_AGAINST['starlette']}: re-read "
        "starlette/routing.py (Match, Route.matches, path_regex, param_convertors: the router's "
        "choice the fast path mirrors), starlette/middleware/exceptions.py (how handlers are "
        "picked) and starlette/middleware/body_limit.py; run libs/web/tests/test_fastpath.py; "
        "then update WRITTEN_AGAINST"
    ),
    "uvicorn": (
        f"{LIMITS} (LimitedHttpToolsProtocol) was written against uvicorn "
        f"{WRITTEN_AGAINST['uvicorn']}: re-read the new uvicorn/protocols/http/httptools_impl.py "
        "(HttpToolsProtocol.__init__, connection_made, data_received, on_headers_complete, "
        "on_message_complete, on_response_complete, the keep-alive timer, send_400_response, "
        "RequestResponseCycle's flags) against every override and attribute limits.py uses; run "
        "libs/web/tests/test_limits.py; then update WRITTEN_AGAINST"
    ),
    "httptools": (
        f"{LIMITS} relies on httptools {WRITTEN_AGAINST['httptools']} stopping the parse when a "
        "callback raises (the 431 of a head over the cap) and uvicorn answering send_400_response: "
        "run libs/web/tests/test_limits.py; then update WRITTEN_AGAINST"
    ),
}


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, _, pinned = line.partition("==")
            pins[name.strip().lower().replace("_", "-")] = pinned.strip()
    return pins


@pytest.mark.parametrize("package", sorted(WRITTEN_AGAINST))
def test_constraints_pin_the_version_the_code_was_written_against(package: str) -> None:
    pinned = _pins().get(package)
    assert pinned == WRITTEN_AGAINST[package], (
        f"constraints.txt pins {package}=={pinned}, not {WRITTEN_AGAINST[package]}. {RECHECK[package]}"
    )


@pytest.mark.parametrize("package", sorted(WRITTEN_AGAINST))
def test_the_installed_version_is_the_pinned_one(package: str) -> None:
    pinned = _pins().get(package)
    installed = version(package)
    assert installed == pinned, (
        f"{package} {installed} is installed, constraints.txt pins {pinned} (install with "
        f"`pip install -c constraints.txt`, as make and the Dockerfiles do). {RECHECK[package]}"
    )


def _names(module: str, *names: str) -> list[str]:
    """Which of `names` `module` no longer has."""
    found = importlib.import_module(module)
    return [name for name in names if not hasattr(found, name)]


# -- FastAPI (orders_web.fastpath) ---------------------------------------------------------------


def test_the_fastapi_names_the_fast_path_imports_exist() -> None:
    missing = {
        module: gone
        for module, names in {
            "fastapi.dependencies.utils": ("request_params_to_args",),
            "fastapi.dependencies.models": ("Dependant",),
            "fastapi.exceptions": ("RequestValidationError",),
            "fastapi.routing": ("APIRoute", "request_response"),
            "starlette.concurrency": ("run_in_threadpool",),
            "starlette.exceptions": ("HTTPException",),
            "starlette.middleware.body_limit": ("RequestBodyLimitMiddleware",),
            "starlette.routing": ("BaseRoute", "Match", "Route", "WebSocketRoute"),
        }.items()
        if (gone := _names(module, *names))
    }
    assert not missing, f"gone: {missing}. {RECHECK['fastapi']}"


def test_the_fastapi_signatures_the_fast_path_calls_hold() -> None:
    from fastapi._compat import ModelField
    from fastapi.dependencies.utils import request_params_to_args
    from fastapi.routing import APIRoute
    from starlette.middleware.body_limit import RequestBodyLimitMiddleware

    wrong = []
    if list(inspect.signature(request_params_to_args).parameters) != ["fields", "received_params"]:
        wrong.append("request_params_to_args(fields, received_params)")
    if "route_class_override" not in inspect.signature(APIRouter.add_api_route).parameters:
        wrong.append("APIRouter.add_api_route(route_class_override=...)")
    if "loc" not in inspect.signature(ModelField.validate).parameters:
        wrong.append("ModelField.validate(value, values, loc=...)")
    if not hasattr(APIRoute, "get_route_handler"):
        wrong.append("APIRoute.get_route_handler")
    if list(inspect.signature(RequestBodyLimitMiddleware.__init__).parameters) != [
        "self",
        "app",
        "max_body_size",
    ]:
        wrong.append("RequestBodyLimitMiddleware(app, max_body_size)")
    assert not wrong, f"changed: {wrong}. {RECHECK['fastapi']}"


def test_the_dependant_and_route_fields_the_fast_path_reads_exist() -> None:
    from fastapi.dependencies.models import Dependant
    from fastapi.dependencies.utils import request_params_to_args

    from orders_web.fastpath import DirectRoute, direct

    read = {
        "path_params",
        "query_params",
        "header_params",
        "cookie_params",
        "body_params",
        "dependencies",
        "call",
        "name",
        "request_param_name",
        "background_tasks_param_name",
        "response_param_name",
        "security_scopes_param_name",
        "http_connection_param_name",
        "websocket_param_name",
    }
    gone = read - {field.name for field in dataclasses.fields(Dependant)}
    assert not gone, f"Dependant lost {sorted(gone)}. {RECHECK['fastapi']}"

    router = APIRouter()

    @direct(router, "GET", "/things/{thing_id}")
    async def thing(thing_id: str, size: int = 1) -> Response:
        return Response(f"{thing_id}{size}")

    route = router.routes[-1]
    assert type(route) is DirectRoute, f"route_class_override no longer makes the route. {RECHECK['fastapi']}"
    for attribute in ("dependant", "dependency_overrides_provider", "path_regex", "param_convertors"):
        assert hasattr(route, attribute), f"APIRoute lost {attribute}. {RECHECK['fastapi']}"
    # request_params_to_args still answers (values, errors), validated and converted.
    values, errors = request_params_to_args(route.dependant.query_params, {"size": "3"})
    assert (values, errors) == ({"size": 3}, []), f"request_params_to_args changed. {RECHECK['fastapi']}"
    values, errors = request_params_to_args(route.dependant.query_params, {"size": "x"})
    assert [error["loc"] for error in errors] == [("query", "size")], (
        f"request_params_to_args reports errors differently: {errors}. {RECHECK['fastapi']}"
    )


# -- uvicorn (orders_web.limits) -----------------------------------------------------------------

PROTOCOL_ATTRIBUTES = (
    "config",
    "connections",
    "cycle",
    "flow",
    "headers",
    "loop",
    "pipeline",
    "scope",
    "server_state",
    "timeout_keep_alive",
    "timeout_keep_alive_task",
    "transport",
    "url",
)
"""What LimitedHttpToolsProtocol reads or sets on uvicorn's protocol once a request has begun."""

PROTOCOL_METHODS = (
    "connection_made",
    "connection_lost",
    "data_received",
    "on_headers_complete",
    "on_message_complete",
    "on_response_complete",
    "handle_websocket_upgrade",
    "send_400_response",
    "timeout_keep_alive_handler",
    "_unset_keepalive_if_required",
)
"""What it overrides or calls."""

CYCLE_ATTRIBUTES = (
    "disconnected",
    "keep_alive",
    "message_event",
    "more_body",
    "response_complete",
    "response_started",
)
"""What it reads or sets on uvicorn's RequestResponseCycle."""


def test_the_uvicorn_names_the_limits_import_exist() -> None:
    missing = {
        module: gone
        for module, names in {
            "uvicorn.protocols.http.httptools_impl": (
                "HttpToolsProtocol",
                "RequestResponseCycle",
                "STATUS_LINE",
            ),
            "uvicorn.config": ("Config",),
            "uvicorn.server": ("ServerState",),
        }.items()
        if (gone := _names(module, *names))
    }
    assert not missing, f"gone: {missing}. {RECHECK['uvicorn']}"


def test_the_protocol_methods_and_status_lines_the_limits_use_exist() -> None:
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

    gone = [name for name in PROTOCOL_METHODS if not callable(getattr(HttpToolsProtocol, name, None))]
    assert not gone, f"HttpToolsProtocol lost {gone}. {RECHECK['uvicorn']}"
    signature = list(inspect.signature(HttpToolsProtocol.__init__).parameters)
    assert signature == ["self", "config", "server_state", "app_state", "_loop"], (
        f"HttpToolsProtocol.__init__ is now {signature}. {RECHECK['uvicorn']}"
    )
    for status in (400, 408, 431, 503):
        assert STATUS_LINE.get(status, b"").startswith(f"HTTP/1.1 {status} ".encode()), (
            f"STATUS_LINE[{status}] changed. {RECHECK['uvicorn']}"
        )


async def test_the_protocol_and_cycle_attributes_the_limits_use_exist() -> None:
    """A real uvicorn protocol (on a mock transport) that has begun a request has every
    attribute LimitedHttpToolsProtocol reads, and so has its cycle."""
    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    config = Config(app, http="httptools", lifespan="off", log_config=None)
    config.load()
    protocol = HttpToolsProtocol(config, ServerState(), {}, asyncio.get_running_loop())
    transport = mock.Mock()
    transport.get_extra_info.return_value = None
    transport.is_closing.return_value = False
    protocol.connection_made(transport)
    protocol.data_received(b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n\r\n{")
    try:
        gone = [name for name in PROTOCOL_ATTRIBUTES if not hasattr(protocol, name)]
        assert not gone, f"HttpToolsProtocol no longer has {gone}. {RECHECK['uvicorn']}"
        assert protocol.server_state.default_headers is not None
        assert hasattr(protocol.flow, "read_paused"), f"FlowControl lost read_paused. {RECHECK['uvicorn']}"
        gone = [name for name in CYCLE_ATTRIBUTES if not hasattr(protocol.cycle, name)]
        assert not gone, f"RequestResponseCycle no longer has {gone}. {RECHECK['uvicorn']}"
        assert protocol.cycle.more_body, f"a body half in no longer reads as more_body. {RECHECK['uvicorn']}"
    finally:
        protocol.connection_lost(None)
        await asyncio.sleep(0)
