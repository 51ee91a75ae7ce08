"""Direct routes: parsed as FastAPI documents them, answered as the router would, and refusing
every option they cannot honour."""

from collections.abc import Callable
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, Header, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from orders_web.fastpath import DirectRoute, direct, include
from orders_web.http import envelope, install_common


class Thing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    size: int = Field(ge=1)


class Paging(BaseModel):
    limit: int = Field(10, ge=1)


def _count(request: Request) -> str:
    return "real"


Counted = Annotated[str, Depends(_count)]


def _things_app() -> FastAPI:
    """Direct and regular routes that overlap, to check the direct path picks what the router would."""
    app = FastAPI()
    install_common(app, cors_origins="http://shop.example")
    regular = APIRouter()

    @regular.get("/things/special")
    async def special() -> object:
        return envelope("regular", "special")

    @regular.post("/things/{thing}")
    async def post_thing(thing: str) -> object:
        return envelope("regular post", thing)

    included = APIRouter()

    @included.get("/things/included")
    async def from_a_router() -> object:
        return envelope("regular", "included")

    fast = APIRouter()

    @direct(fast, "GET", "/things/{thingId}")
    async def thing(
        path_id: Annotated[str, Path(alias="thingId", max_length=16)],
        paging: Annotated[Paging, Query()],
        counted: Counted,
        agent: Annotated[str | None, Header(alias="X-Agent")] = None,
    ) -> Response:
        if path_id == "missing":
            raise HTTPException(404, "no such thing")
        if path_id == "down":
            raise RedisConnectionError("gone")
        if path_id == "bug":
            raise RuntimeError("bug")
        return envelope("direct", {"id": path_id, "limit": paging.limit, "counted": counted, "agent": agent})

    @direct(fast, "POST", "/things", max_body_size=200)
    async def make_thing(body: Thing) -> Response:
        return envelope("made", body.model_dump(), status_code=201)

    include(app, regular)
    app.include_router(included)
    include(app, fast)
    for route in app.router.routes:
        if isinstance(route, DirectRoute):

            async def not_through_the_router(*_: object) -> None:
                raise AssertionError("a direct route went through the router")

            route.handle = not_through_the_router  # type: ignore[method-assign,assignment]
    return app


def _client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


async def test_direct_routes_answer_as_the_router_would() -> None:
    async with _client(_things_app()) as c:
        direct_answer = await c.get("/things/abc?limit=3", headers={"X-Agent": "curl"})
        assert (direct_answer.status_code, direct_answer.json()["message"]) == (200, "direct")
        assert direct_answer.json()["data"] == {"id": "abc", "limit": 3, "counted": "real", "agent": "curl"}
        assert direct_answer.headers["vary"] == "Origin", "CORS still applies"
        assert (await c.get("/things/special")).json()["data"] == "special", "an earlier route wins"
        assert (await c.get("/things/included")).json()["data"] == "included", "an included router's"
        assert (await c.post("/things/abc")).json()["message"] == "regular post", "another method"
        assert (await c.put("/things/abc")).status_code == 405
        assert (await c.get("/things/" + "x" * 17)).status_code == 400, "path parameters are checked"
        missing = await c.get("/things/missing")
        assert (missing.status_code, missing.json()["message"]) == (404, "no such thing")
        down = await c.get("/things/down")
        assert (down.status_code, down.headers["retry-after"]) == (503, "1")
        bug = await c.get("/things/bug")
        assert (bug.status_code, bug.json()["message"]) == (500, "Internal server error")
        cors = await c.get("/things/abc", headers={"Origin": "http://shop.example"})
        assert cors.headers["access-control-allow-origin"] == "http://shop.example"


async def test_parameters_and_bodies_are_validated_by_their_models() -> None:
    async with _client(_things_app()) as c:
        bad_query = await c.get("/things/abc?limit=0")
        made = await c.post("/things", json={"name": "cup", "size": 2})
        bad_body = await c.post("/things", json={"name": "", "size": 2, "colour": "red"})
        not_json = await c.post("/things", content=b'{"name": "cup", "size": 2}')
        malformed = await c.post("/things", content=b"{", headers={"Content-Type": "application/json"})
        too_big = await c.post("/things", json={"name": "x" * 300, "size": 2})
    assert bad_query.status_code == 400
    assert bad_query.json()["errors"][0]["field"] == "limit"
    assert (made.status_code, made.json()["data"]) == (201, {"name": "cup", "size": 2})
    assert bad_body.status_code == 400
    assert {e["field"] for e in bad_body.json()["errors"]} == {"name", "colour"}
    assert not_json.status_code == 415
    assert (malformed.status_code, malformed.json()["errors"][0]["field"]) == (400, "body")
    assert (too_big.status_code, too_big.json()["success"]) == (413, False), "the route's own limit"


def _overridden(request: Request) -> str:
    return "overridden"


@pytest.mark.parametrize("override", [_overridden, lambda: "overridden"])
async def test_dependency_overrides_are_honoured(override: Callable[..., str]) -> None:
    app = _things_app()
    counted = APIRouter()

    @counted.get("/counted")
    async def regular(value: Counted) -> object:
        return envelope("regular", value)

    include(app, counted)
    app.dependency_overrides[_count] = override
    async with _client(app) as c:
        answer = await c.get("/things/abc")
        regular_answer = await c.get("/counted")
    assert answer.json()["data"]["counted"] == "overridden"
    assert regular_answer.json()["data"] == "overridden", "routes added by include() too"


class _Teapot(Exception):
    pass


def _teapot(request: Request, exc: Exception) -> Response:
    return Response(b"teapot", 418)  # a plain function handler: Starlette runs it in a thread


async def test_plain_handlers_and_routes_added_later() -> None:
    app = _things_app()
    app.add_exception_handler(_Teapot, _teapot)
    tea = APIRouter()

    @direct(tea, "GET", "/tea/{cup}")
    async def brew() -> Response:
        raise _Teapot

    include(app, tea)
    async with _client(app) as c:
        assert (await c.get("/tea/green")).status_code == 418
        assert (await c.get("/things/later")).json()["message"] == "direct"

        @app.get("/things/later")
        async def later() -> object:
            return envelope("regular", "later")

        app.router.routes.insert(0, app.router.routes.pop())  # now before the direct route
        assert (await c.get("/things/later")).json()["message"] == "regular"


async def test_an_endpoint_must_return_a_response() -> None:
    app = FastAPI()
    install_common(app)
    router = APIRouter()

    @direct(router, "GET", "/dict")
    async def not_a_response() -> Response:
        return {"a": 1}  # type: ignore[return-value]

    include(app, router)
    async with _client(app) as c:
        assert (await c.get("/dict")).status_code == 500


async def _async_gen(request: Request):  # type: ignore[no-untyped-def]
    yield "x"


def _with_param(request: Request, page: int = 1) -> int:
    return page


@pytest.mark.parametrize(
    ("options", "signature_of", "reason"),
    [
        ({"dependencies": [Depends(_count)]}, "plain", "no route dependencies"),
        ({"response_model_exclude_none": True}, "plain", "cannot apply"),
        ({}, "blocking", "must be async"),
        ({}, "background", "path, query, header and body parameters only"),
        ({}, "generator_dependency", "take only the Request"),
        ({}, "dependency_with_parameters", "take only the Request"),
        ({}, "two_bodies", "one body model"),
    ],
)
def test_what_a_direct_route_cannot_honour_is_refused(
    options: dict[str, Any], signature_of: str, reason: str
) -> None:
    async def plain() -> Response:
        return Response()

    def blocking() -> Response:
        return Response()

    async def background(tasks: BackgroundTasks) -> Response:
        return Response()

    async def generator_dependency(value: Annotated[str, Depends(_async_gen)]) -> Response:
        return Response()

    async def dependency_with_parameters(value: Annotated[int, Depends(_with_param)]) -> Response:
        return Response()

    async def two_bodies(a: Thing, b: Thing) -> Response:
        return Response()

    endpoints: dict[str, Callable[..., Any]] = {
        f.__name__: f
        for f in (plain, blocking, background, generator_dependency, dependency_with_parameters, two_bodies)
    }
    with pytest.raises(TypeError, match=reason):
        direct(APIRouter(), "POST", "/x", **options)(endpoints[signature_of])
