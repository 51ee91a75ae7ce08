"""Access control of the query service (AUTH_MODE=oidc) over a real Redis and a real HTTP server:
tokens, principals, public paths, the OpenAPI description, refusing to start open.

Tokens are signed here with test keys whose JWKS (and discovery document) a real
local HTTP server serves, as a provider would (oidc_provider.py); the end-to-end
tests use Ory Hydra. Every bad token of the issue's list gets a 401 (403 for a
token without the user claim), never a 5xx and never another user's data.
"""

import asyncio
import logging
import time
from typing import Any

import httpx
import pytest

from orders_contract.models import Order
from orders_contract.settings import AuthSettings
from orders_query.app import create_app
from orders_query.settings import Settings
from orders_web.auth import check_bind, redact_query

from .oidc_provider import BAD, USER_A, USER_B, KeyProvider, bad_tokens, bearer, oidc_settings

pytestmark = pytest.mark.redis


async def test_no_token_is_401_with_www_authenticate(
    query: httpx.AsyncClient, orders: dict[int, Order]
) -> None:
    answer = await query.get(f"/api/orders/{orders[USER_A].order_id}")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.json()["success"] is False
    assert answer.json()["data"] is None


async def test_a_good_token_reads_its_own_order(
    query: httpx.AsyncClient, provider: KeyProvider, orders: dict[int, Order]
) -> None:
    for token in (provider.token(), provider.sign(provider.claims(), key="ec")):  # RS256 and ES256
        answer = await query.get(f"/api/orders/{orders[USER_A].order_id}", headers=bearer(token))
        assert answer.status_code == 200, answer.text
        assert answer.json()["data"]["userId"] == USER_A


@pytest.mark.parametrize("case", BAD)
async def test_bad_tokens_get_401(
    query: httpx.AsyncClient, provider: KeyProvider, orders: dict[int, Order], case: str
) -> None:
    token, reason = bad_tokens(provider)[case]
    for path in (
        f"/api/orders/{orders[USER_A].order_id}",
        "/api/orders",
        f"/api/orders/{orders[USER_B].order_id}",
    ):
        answer = await query.get(path, headers=bearer(token))
        assert answer.status_code == 401, (case, path, answer.text)
        assert reason in answer.json()["message"]
        assert answer.json()["data"] is None
        assert answer.headers["www-authenticate"].startswith('Bearer error="invalid_token"')


async def test_a_token_without_the_user_claim_is_403(
    query: httpx.AsyncClient, provider: KeyProvider, orders: dict[int, Order]
) -> None:
    answer = await query.get("/api/orders", headers=bearer(provider.token(user_id=None)))
    assert answer.status_code == 403
    assert "no user id" in answer.json()["message"]
    assert answer.json()["data"] is None


async def test_a_wrong_scheme_is_401(query: httpx.AsyncClient, provider: KeyProvider) -> None:
    answer = await query.get("/api/orders", headers={"Authorization": f"Basic {provider.token()}"})
    assert answer.status_code == 401


async def test_user_a_never_sees_user_b(
    query: httpx.AsyncClient, provider: KeyProvider, orders: dict[int, Order]
) -> None:
    a = bearer(provider.token(USER_A))
    b_order = orders[USER_B].order_id
    for path in (
        f"/api/orders/{b_order}",
        f"/api/orders/{b_order}/history",
        f"/api/orders/{b_order}/events",
        f"/api/orders/user/{USER_B}",
        f"/api/orders/events?userId={USER_B}",
    ):
        answer = await query.get(path, headers=a)
        assert answer.status_code == 404, (path, answer.text)
        assert "productName" not in answer.text
        assert answer.json()["data"] is None
    # An unknown order is the same 404 as another user's: ids are not confirmed.
    for suffix in ("", "/history", "/events"):
        unknown = await query.get(f"/api/orders/01939a4e-0000-7000-8000-000000000000{suffix}", headers=a)
        other = await query.get(f"/api/orders/{b_order}{suffix}", headers=a)
        assert unknown.json()["message"].split()[0] == other.json()["message"].split()[0] == "Order"
        assert unknown.status_code == other.status_code == 404, suffix
    # Lists carry only A's orders.
    for path in ("/api/orders", "/api/orders/status/placed", f"/api/orders/user/{USER_A}"):
        answer = await query.get(path, headers=a)
        assert answer.status_code == 200
        assert [o["userId"] for o in answer.json()["data"]] == [USER_A], path
    history = await query.get(f"/api/orders/{orders[USER_A].order_id}/history", headers=a)
    assert history.status_code == 200
    assert (await query.get("/api/orders/stats", headers=a)).status_code == 403


async def test_staff_reads_every_order_and_feed(
    query: httpx.AsyncClient, provider: KeyProvider, orders: dict[int, Order]
) -> None:
    staff = bearer(provider.token(user_id=None, roles=["orders:staff"]))
    for user, order in orders.items():
        answer = await query.get(f"/api/orders/{order.order_id}", headers=staff)
        assert answer.status_code == 200
        assert answer.json()["data"]["userId"] == user
        assert (await query.get(f"/api/orders/{order.order_id}/history", headers=staff)).status_code == 200
    listed = await query.get("/api/orders", headers=staff)
    assert {o["userId"] for o in listed.json()["data"]} == {USER_A, USER_B}
    assert (await query.get("/api/orders/stats", headers=staff)).status_code == 200


async def test_public_paths_need_no_token(query: httpx.AsyncClient) -> None:
    for path in (
        "/health/live",
        "/docs",
        "/openapi.json",
        "/dashboard",
        "/dashboard/assets/dashboard.js",
        "/metrics",
    ):
        assert (await query.get(path)).status_code == 200, path
    assert (await query.get("/api/orders/stats")).status_code == 401


async def test_the_openapi_document_offers_bearer_and_client_credentials(query: httpx.AsyncClient) -> None:
    schema = (await query.get("/openapi.json")).json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearer"]["scheme"] == "bearer"
    assert schemes["clientCredentials"]["flows"]["clientCredentials"]["tokenUrl"].endswith("/token")
    operation = schema["paths"]["/api/orders/{orderId}"]["get"]
    assert {"401", "403", "429"} <= set(operation["responses"])
    assert schema["paths"]["/health/live"]["get"]["security"] == []


async def test_an_unknown_kid_refetches_the_keys_at_most_every_interval(
    test_env: dict[str, str], provider: KeyProvider, orders: dict[int, Order], serve: Any
) -> None:
    settings = oidc_settings(test_env, provider, oidc_jwks_min_refetch_s=3600)
    async with serve(settings) as query:
        hits = provider.jwks_hits  # one fetch at start
        for _ in range(5):
            answer = await query.get(
                "/api/orders", headers=bearer(provider.sign(provider.claims(), kid="rotated"))
            )
            assert answer.status_code == 401
        assert provider.jwks_hits == hits  # refetched at most once an hour
    settings = oidc_settings(test_env, provider, oidc_jwks_min_refetch_s=0)
    async with serve(settings) as query:
        old = provider.kids["rsa"]
        provider.kids["rsa"] = "rotated"  # the provider rotates its key id
        try:
            answer = await query.get("/api/orders", headers=bearer(provider.token()))
            assert answer.status_code == 200  # the unknown kid made it fetch the new keys
        finally:
            provider.kids["rsa"] = old


def test_the_open_api_refuses_a_public_address_unless_asked_for() -> None:
    with pytest.raises(RuntimeError, match="refusing to serve without access control"):
        check_bind(AuthSettings(), "0.0.0.0")
    check_bind(AuthSettings(), "127.0.0.1")
    check_bind(AuthSettings(), "::1")
    check_bind(AuthSettings(auth_mode="none"), "0.0.0.0")  # set explicitly: allowed
    with pytest.raises(RuntimeError, match="OIDC_ISSUER"):
        check_bind(AuthSettings(auth_mode="oidc"), "127.0.0.1")


def test_the_explicit_none_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_MODE", "none")
    check_bind(AuthSettings(), "0.0.0.0")


def _access_line(url: str) -> logging.LogRecord:
    """An access-log record of uvicorn's for a GET of `url`."""
    args = ("127.0.0.1:5000", "GET", url, "1.1", 200)
    return logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d', args, None)


def test_access_log_lines_never_carry_a_ticket() -> None:
    record = _access_line("/api/orders/events?ticket=s3cr3t&userId=1")
    assert redact_query(record)
    assert "s3cr3t" not in record.getMessage()
    assert "ticket=%5Bredacted%5D&userId=1" in record.getMessage()
    elsewhere = _access_line("/api/orders?ticket=s3cr3t")  # not used up there: redacted all the same
    assert redact_query(elsewhere)
    assert "s3cr3t" not in elsewhere.getMessage()


async def test_a_cached_token_is_never_used_past_its_exp(
    test_env: dict[str, str], provider: KeyProvider, orders: dict[int, Order], serve: Any
) -> None:
    settings = oidc_settings(test_env, provider, oidc_clock_skew_s=0, oidc_token_cache_s=600)
    now = int(time.time())
    token = provider.sign(provider.claims(exp=now + 2))
    async with serve(settings) as query:
        assert (await query.get("/api/orders", headers=bearer(token))).status_code == 200  # now cached
        await asyncio.sleep(max(0.0, now + 3 - time.time()))
        answer = await query.get("/api/orders", headers=bearer(token))
        assert answer.status_code == 401
        assert "expired" in answer.json()["message"]


def test_the_service_refuses_to_start_open_on_a_public_address() -> None:
    with pytest.raises(RuntimeError, match="refusing to serve without access control"):
        create_app(Settings(bind_host="0.0.0.0"))
