"""The shared HTTP pieces: every answer is an envelope, oversized bodies get 413."""

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from redis.exceptions import ConnectionError as RedisConnectionError
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from orders_common.http import (
    MAX_BODY_BYTES,
    Cors,
    DirectRoute,
    direct,
    envelope,
    health_router,
    install_common,
)


async def _fails() -> None:
    raise ConnectionError("nobody home")


async def _works() -> None:
    return None


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    install_common(app, cors_origins="http://shop.example")
    app.include_router(health_router({"good": _works}))

    @app.post("/echo")
    async def echo(request: Request) -> object:
        return envelope("ok", {"size": len(await request.body())})

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("bug")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


async def test_bodies_up_to_the_limit_pass(client: httpx.AsyncClient) -> None:
    response = await client.post("/echo", content=b"x" * MAX_BODY_BYTES)
    assert response.status_code == 200
    assert response.json()["data"] == {"size": MAX_BODY_BYTES}


async def test_declared_oversized_body_gets_413(client: httpx.AsyncClient) -> None:
    response = await client.post("/echo", content=b"x" * (MAX_BODY_BYTES + 1))
    assert response.status_code == 413
    assert response.json()["success"] is False


async def test_streamed_oversized_body_gets_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"y" * 1024

    response = await client.post("/echo", content=chunks())
    assert response.status_code == 413


async def test_unknown_routes_and_bugs_answer_in_the_envelope(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nowhere")
    assert missing.status_code == 404
    assert missing.json()["success"] is False
    assert "timestamp" in missing.json()
    bug = await client.get("/boom")
    assert bug.status_code == 500
    assert bug.json() == {**bug.json(), "success": False, "message": "Internal server error"}


async def test_cors_for_configured_origins(client: httpx.AsyncClient) -> None:
    response = await client.options(
        "/echo", headers={"Origin": "http://shop.example", "Access-Control-Request-Method": "POST"}
    )
    assert response.headers["access-control-allow-origin"] == "http://shop.example"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Origin": "http://shop.example"}, {"Origin": "http://elsewhere.example"}],
    ids=["no origin", "allowed origin", "foreign origin"],
)
@pytest.mark.parametrize("vary", [None, "Accept-Encoding"])
async def test_cors_answers_as_starlettes_does(headers: dict[str, str], vary: str | None) -> None:
    """`Cors` only takes a shorter path to the same headers as Starlette's CORSMiddleware."""
    answers = []
    for middleware in (Cors, CORSMiddleware):
        app = FastAPI()
        app.add_middleware(middleware, allow_origins=["http://shop.example"], expose_headers=["Location"])

        @app.get("/thing")
        async def thing() -> Response:
            return Response(b"{}", headers={"Vary": vary} if vary else None, media_type="application/json")

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            response = await c.get("/thing", headers=headers)
        answers.append(sorted(response.headers.multi_items()))
    assert answers[0] == answers[1]
    assert ("vary", f"{vary}, Origin" if vary else "Origin") in answers[0]


async def test_readiness_names_what_is_down() -> None:
    app = FastAPI()
    install_common(app)
    app.include_router(health_router({"good": _works, "bad": _fails}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        live = await c.get("/health/live")
        ready = await c.get("/health/ready")
    assert live.status_code == 200
    assert ready.status_code == 503
    assert ready.json()["data"]["good"] == "ok"
    assert ready.json()["data"]["bad"].startswith("down")


def _things_app() -> FastAPI:
    """Direct and regular routes that overlap, to check the direct path picks what the router would."""
    app = FastAPI()
    install_common(app, cors_origins="http://shop.example")

    @app.get("/things/special")
    async def special() -> object:
        return envelope("regular", "special")

    @app.post("/things/{thing}")
    async def post_thing(thing: str) -> object:
        return envelope("regular post", thing)

    included = APIRouter()

    @included.get("/things/included")
    async def from_a_router() -> object:
        return envelope("regular", "included")

    app.include_router(included)

    @direct(app, "GET", "/things/{thingId}")
    async def thing(request: Request) -> Response:
        thing_id = request.path_params["thingId"]
        if thing_id == "missing":
            raise HTTPException(404, "no such thing")
        if thing_id == "down":
            raise RedisConnectionError("gone")
        if thing_id == "bug":
            raise RuntimeError("bug")
        return envelope("direct", thing_id)

    for route in app.router.routes:
        if isinstance(route, DirectRoute):

            async def not_through_the_router(*_: object) -> None:
                raise AssertionError("a direct route went through the router")

            route.handle = not_through_the_router  # type: ignore[method-assign,assignment]
    return app


async def test_direct_routes_answer_as_the_router_would() -> None:
    transport = httpx.ASGITransport(app=_things_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        direct_answer = await c.get("/things/abc")
        assert (direct_answer.status_code, direct_answer.json()["message"]) == (200, "direct")
        assert direct_answer.json()["data"] == "abc"
        assert direct_answer.headers["vary"] == "Origin", "CORS still applies"
        assert (await c.get("/things/special")).json()["data"] == "special", "an earlier route wins"
        assert (await c.get("/things/included")).json()["data"] == "included", "an included router's"
        assert (await c.post("/things/abc")).json()["message"] == "regular post", "another method"
        assert (await c.put("/things/abc")).status_code == 405
        missing = await c.get("/things/missing")
        assert (missing.status_code, missing.json()["message"]) == (404, "no such thing")
        down = await c.get("/things/down")
        assert (down.status_code, down.headers["retry-after"]) == (503, "1")
        bug = await c.get("/things/bug")
        assert (bug.status_code, bug.json()["message"]) == (500, "Internal server error")
        cors = await c.get("/things/abc", headers={"Origin": "http://shop.example"})
        assert cors.headers["access-control-allow-origin"] == "http://shop.example"


class _Teapot(Exception):
    pass


def _teapot(request: Request, exc: Exception) -> Response:
    return Response(b"teapot", 418)  # a plain function handler: Starlette runs it in a thread


async def test_direct_routes_with_plain_handlers_and_routes_added_later() -> None:
    app = _things_app()
    app.add_exception_handler(_Teapot, _teapot)

    @direct(app, "GET", "/tea/{cup}")
    async def tea(request: Request) -> Response:
        raise _Teapot

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/tea/green")).status_code == 418
        assert (await c.get("/things/later")).json()["message"] == "direct"

        @app.get("/things/later")
        async def later() -> object:
            return envelope("regular", "later")

        app.router.routes.insert(0, app.router.routes.pop())  # now before the direct route
        assert (await c.get("/things/later")).json()["message"] == "regular"


def test_a_direct_endpoint_must_be_async() -> None:
    def blocking(request: Request) -> Response:
        return Response()

    with pytest.raises(TypeError, match="must be async"):
        direct(FastAPI(), "GET", "/x")(blocking)  # type: ignore[arg-type]
