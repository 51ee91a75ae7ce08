"""The shared HTTP pieces: every answer is an envelope, oversized bodies get 413."""

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request

from orders_web.http import MAX_BODY_BYTES, envelope, health_router, install_common


async def _fails() -> None:
    raise ConnectionError("nobody home")


async def _works() -> None:
    return None


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    install_common(app, cors_origins="http://shop.example")
    app.include_router(health_router(lambda request: {"good": _works}))

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


async def test_readiness_names_what_is_down() -> None:
    app = FastAPI()
    install_common(app)
    app.include_router(health_router(lambda request: {"good": _works, "bad": _fails}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        live = await c.get("/health/live")
        ready = await c.get("/health/ready")
    assert live.status_code == 200
    assert ready.status_code == 503
    assert ready.json()["data"]["good"] == "ok"
    assert ready.json()["data"]["bad"].startswith("down")
