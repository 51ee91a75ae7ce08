"""AuthMiddleware in memory: an app's own public paths and ticket routes, as it declares them.

No provider and no Redis: only the requests that need neither (no token, a
ticket of a fake redeemer for a principal whose rate limit is off) are made.
"""

from collections.abc import AsyncIterator
from typing import Literal

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.middleware import Middleware

from orders_contract.settings import AuthSettings
from orders_web.auth import Auth, AuthMiddleware, Principal, Role, get_principal, install_auth
from orders_web.http import install_error_handlers

SERVICE = Principal("svc", None, Role.SERVICE)


class Tickets:
    """A TicketRedeemer that takes any ticket, and remembers which it was asked for."""

    def __init__(self) -> None:
        self.redeemed: list[str] = []

    async def redeem(self, ticket: str) -> Principal:
        self.redeemed.append(ticket)
        return SERVICE


def make_app(tickets: Tickets, mode: Literal["none", "oidc"] = "oidc") -> FastAPI:
    settings = AuthSettings(
        auth_mode=mode,
        oidc_issuer="http://127.0.0.1:9",
        oidc_audience="things",
        rate_limit_trusted_requests=0,  # the ticket's principal is not counted: no Redis needed
    )
    auth = Auth(
        settings, ["/page"], ["/page/assets/"], ticket_routes=["/things/{id}/events"], tickets=tickets
    )
    app = FastAPI(middleware=[Middleware(AuthMiddleware, auth=auth)])
    install_error_handlers(app)
    install_auth(app, auth)

    @app.get("/page")
    @app.get("/page/assets/app.js")
    async def page() -> dict[str, str]:
        return {}

    @app.get("/private")
    @app.get("/things/{id}/events")
    async def who(request: Request) -> dict[str, str]:
        return {"sub": get_principal(request).subject}

    return app


@pytest.fixture
def tickets() -> Tickets:
    return Tickets()


@pytest.fixture
async def client(tickets: Tickets) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(tickets))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_the_app_s_public_paths_and_the_toolkit_s_need_no_token(client: httpx.AsyncClient) -> None:
    for path in ("/page", "/page/assets/app.js", "/openapi.json", "/docs/oauth2-audience.js"):
        assert (await client.get(path)).status_code == 200, path
    private = await client.get("/private")
    assert private.status_code == 401
    assert private.headers["www-authenticate"] == "Bearer"
    # The paths another app serves without a token are not this one's.
    for path in ("/dashboard", "/asyncapi", "/", "/health-not/x"):
        assert (await client.get(path)).status_code == 401, path


async def test_a_ticket_is_redeemed_only_by_a_ticket_route(
    client: httpx.AsyncClient, tickets: Tickets
) -> None:
    for method, path in (
        ("GET", "/things/1/x/events"),  # shaped like the route, not the route
        ("POST", "/things/1/events"),  # the route's path, not its method
        ("GET", "/private"),
    ):
        answer = await client.request(method, f"{path}?ticket=t")
        assert answer.status_code == 401, (method, path)
    assert tickets.redeemed == []
    answer = await client.get("/things/1/events?ticket=t")
    assert answer.status_code == 200
    assert answer.json() == {"sub": "svc"}
    assert tickets.redeemed == ["t"]


async def test_in_none_mode_everyone_is_anonymous(tickets: Tickets) -> None:
    transport = httpx.ASGITransport(app=make_app(tickets, mode="none"))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.get("/private?ticket=t")
        assert answer.json() == {"sub": "anonymous"}
        assert "securitySchemes" not in (await client.get("/openapi.json")).json().get("components", {})
    assert tickets.redeemed == []
