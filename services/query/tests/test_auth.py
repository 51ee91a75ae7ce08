"""Access control of the query service (AUTH_MODE=oidc) over a real Redis and a real HTTP server.

Tokens are signed here with test keys whose JWKS (and discovery document) a real
local HTTP server serves, as a provider would; the end-to-end tests use Ory Hydra.
Every bad token of the issue's list gets a 401 (403 for a token without the user
claim), never a 5xx and never another user's data.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from orders_contract.models import Order
from orders_contract.settings import AuthSettings
from orders_query.app import create_app
from orders_query.routes import live
from orders_query.settings import Settings
from orders_readmodel.store import OrderStore
from orders_stack import free_port
from orders_stack.sse import read_events
from orders_web.auth import check_bind, redact_query

pytestmark = pytest.mark.redis

AUDIENCE = "orders-api"
USER_A, USER_B = 1001, 1002


class KeyProvider:
    """Signing keys and a real HTTP server publishing them as an OpenID Connect provider does."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.kids = {"rsa": "rsa-1", "ec": "ec-1"}
        self.jwks_hits = 0
        port = free_port()
        self.issuer = f"http://127.0.0.1:{port}"
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    body = {
                        "issuer": provider.issuer,
                        "jwks_uri": f"{provider.issuer}/jwks.json",
                        "token_endpoint": f"{provider.issuer}/token",
                    }
                elif self.path == "/jwks.json":
                    provider.jwks_hits += 1
                    body = provider.jwks()
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def jwks(self) -> dict[str, Any]:
        keys = []
        for name, key in (("rsa", self.rsa), ("ec", self.ec)):
            jwk = json.loads(
                jwt.algorithms.get_default_algorithms()["RS256" if name == "rsa" else "ES256"].to_jwk(
                    key.public_key()
                )
            )
            jwk.update(kid=self.kids[name], use="sig", alg="RS256" if name == "rsa" else "ES256")
            keys.append(jwk)
        return {"keys": keys}

    def claims(self, user_id: int | None = USER_A, **extra: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": [AUDIENCE],
            "sub": f"user-{user_id}",
            "iat": now,
            "nbf": now,
            "exp": now + 600,
        }
        if user_id is not None:
            claims["user_id"] = user_id
        claims.update(extra)
        return claims

    def sign(self, claims: dict[str, Any], key: str = "rsa", kid: str | None = None) -> str:
        private = self.rsa if key == "rsa" else self.ec
        algorithm = "RS256" if key == "rsa" else "ES256"
        return jwt.encode(claims, private, algorithm=algorithm, headers={"kid": kid or self.kids[key]})

    def token(self, user_id: int | None = USER_A, **extra: Any) -> str:
        return self.sign(self.claims(user_id, **extra))

    def public_pem(self) -> bytes:
        return self.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def provider() -> Iterator[KeyProvider]:
    running = KeyProvider()
    try:
        yield running
    finally:
        running.stop()


def oidc_settings(test_env: dict[str, str], provider: KeyProvider, **extra: Any) -> Settings:
    return Settings(
        redis_url=test_env["REDIS_URL"],
        redis_key_prefix=test_env["REDIS_KEY_PREFIX"],
        auth_mode="oidc",
        oidc_issuer=provider.issuer,
        oidc_audience=AUDIENCE,
        sse_heartbeat_ms=200,
        **extra,
    )


@pytest.fixture
async def query(
    test_env: dict[str, str], provider: KeyProvider, serve: Any
) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(oidc_settings(test_env, provider)) as client:
        yield client


@pytest.fixture
async def orders(store: OrderStore, new_order: Callable[..., Order]) -> dict[int, Order]:
    """One order of user A, one of user B."""
    placed = {user: new_order(user_id=user) for user in (USER_A, USER_B)}
    for order in placed.values():
        await store.create(order)
    return placed


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _bad_tokens(p: KeyProvider) -> dict[str, tuple[str, str]]:
    """Each bad token of the issue's list, with the message it must get."""
    good = p.token()
    header, payload, signature = good.split(".")
    none_header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": p.kids["rsa"]}).encode())
    hs_header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": p.kids["rsa"]}).encode())
    hs_body = _b64(json.dumps(p.claims()).encode())
    list_alg_header = _b64(json.dumps({"alg": ["RS256"], "typ": "JWT", "kid": p.kids["rsa"]}).encode())
    hs_signature = _b64(hmac.new(p.public_pem(), f"{hs_header}.{hs_body}".encode(), hashlib.sha256).digest())
    tampered = _b64(json.dumps({**p.claims(), "user_id": USER_B}).encode())
    now = int(time.time())
    return {
        "malformed": ("not-a-jwt", "The token is malformed"),
        "three garbage parts": ("abc.def.ghi", "The token is malformed"),
        "alg none": (f"{none_header}.{payload}.", "The token's algorithm is not accepted"),
        "alg not a string": (
            f"{list_alg_header}.{payload}.{signature}",
            "The token's algorithm is not accepted",
        ),
        "HS256 with the public key": (f"{hs_header}.{hs_body}.{hs_signature}", "algorithm is not accepted"),
        "unknown kid": (p.sign(p.claims(), kid="nobody-knows-me"), "The token's signing key is unknown"),
        "wrong issuer": (p.sign(p.claims(iss="http://evil.example")), "The token's issuer is not accepted"),
        "wrong audience": (p.sign(p.claims(aud=["another-api"])), "The token's audience is not accepted"),
        "expired": (
            p.sign(p.claims(exp=now - 3600, iat=now - 7200, nbf=now - 7200)),
            "The token has expired",
        ),
        "not yet valid": (p.sign(p.claims(nbf=now + 3600)), "The token is not valid yet"),
        "tampered payload": (f"{header}.{tampered}.{signature}", "The token's signature does not verify"),
        "oversized": (p.sign(p.claims(pad="x" * 9000)), "The token is too large"),
        "no exp": (p.sign({k: v for k, v in p.claims().items() if k != "exp"}), "lacks a required claim"),
        "exp past any time": (p.sign(p.claims(exp=10**400)), "The token's exp claim is not a valid time"),
        "exp a string": (p.sign(p.claims(exp=str(now + 600))), "The token's exp claim is not a valid time"),
        "nbf a string": (p.sign(p.claims(nbf=str(now))), "The token's nbf claim is not a valid time"),
        "iat a string": (p.sign(p.claims(iat=str(now))), "The token's iat claim is not a valid time"),
        "empty sub": (p.sign(p.claims(sub="")), "The token's subject (sub) is not valid"),
        "sub not a string": (p.sign(p.claims(sub=1001)), "The token is malformed"),
    }


BAD = [
    "malformed",
    "three garbage parts",
    "alg none",
    "alg not a string",
    "HS256 with the public key",
    "unknown kid",
    "wrong issuer",
    "wrong audience",
    "expired",
    "not yet valid",
    "tampered payload",
    "oversized",
    "no exp",
    "exp past any time",
    "exp a string",
    "nbf a string",
    "iat a string",
    "empty sub",
    "sub not a string",
]


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
    token, reason = _bad_tokens(provider)[case]
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


async def test_the_customer_feed_carries_only_their_transitions(
    query: httpx.AsyncClient, provider: KeyProvider, store: OrderStore, new_order: Callable[..., Order]
) -> None:
    a = bearer(provider.token(USER_A))
    async with asyncio.timeout(20), query.stream("GET", "/api/orders/events", headers=a) as response:
        assert response.status_code == 200
        events = read_events(response)
        first = await anext(events)
        assert first.event == ""  # the starting position
        others, own = new_order(user_id=USER_B), new_order(user_id=USER_A)
        await store.create(others)
        await store.create(own)
        event = await anext(events)
        assert event.json()["orderId"] == own.order_id  # B's order, created first, never shown


async def test_a_stream_ticket_opens_one_stream_once(
    query: httpx.AsyncClient, provider: KeyProvider, orders: dict[int, Order]
) -> None:
    a = bearer(provider.token(USER_A))
    issued = await query.post("/api/orders/events/tickets", headers=a)
    assert issued.status_code == 201
    ticket = issued.json()["data"]["ticket"]
    assert issued.json()["data"]["expiresIn"] == 30
    path = f"/api/orders/{orders[USER_A].order_id}/events?ticket={ticket}"
    async with asyncio.timeout(20), query.stream("GET", path) as response:
        assert response.status_code == 200
        event = await anext(read_events(response))
        assert event.json()["orderId"] == orders[USER_A].order_id
    again = await query.get(path)
    assert again.status_code == 401
    assert "ticket" in again.json()["message"]
    # A ticket carries its principal: A's ticket does not open B's order.
    ticket = (await query.post("/api/orders/events/tickets", headers=a)).json()["data"]["ticket"]
    other = await query.get(f"/api/orders/{orders[USER_B].order_id}/events?ticket={ticket}")
    assert other.status_code == 404
    # Only the live routes take a ticket.
    ticket = (await query.post("/api/orders/events/tickets", headers=a)).json()["data"]["ticket"]
    assert (await query.get(f"/api/orders?ticket={ticket}")).status_code == 401


async def test_only_a_stream_route_uses_up_a_ticket(
    query: httpx.AsyncClient, provider: KeyProvider, orders: dict[int, Order]
) -> None:
    a = bearer(provider.token(USER_A))
    ticket = (await query.post("/api/orders/events/tickets", headers=a)).json()["data"]["ticket"]
    order_id = orders[USER_A].order_id
    for method, path in (
        ("GET", "/api/orders/x/y/events"),  # shaped like a stream, but no route
        ("GET", f"/api/orders/{order_id}/history/events"),
        ("POST", "/api/orders/events"),  # the path of a stream, not its method
        ("GET", f"/api/orders/{order_id}"),
    ):
        answer = await query.request(method, f"{path}?ticket={ticket}")
        assert answer.status_code == 401, (method, path, answer.text)
        assert "bearer token is required" in answer.json()["message"]
    async with (
        asyncio.timeout(20),
        query.stream("GET", f"/api/orders/{order_id}/events?ticket={ticket}") as live,
    ):
        assert live.status_code == 200  # still unused
        assert (await anext(read_events(live))).json()["orderId"] == order_id


async def _noise(store: OrderStore, entries: int) -> list[str]:
    """`entries` transitions of user B's in the update stream, straight; their positions."""
    noise: dict[Any, Any] = {
        "orderId": "01939a4e-0000-7000-8000-000000000001",
        "userId": str(USER_B),
        "status": "PLACED",
    }
    async with store.redis.pipeline(transaction=False) as pipe:
        for n in range(entries):
            pipe.xadd(store.keys.updates, {**noise, "version": str(n)})
        return [str(p) for p in await pipe.execute()]


async def test_a_customer_s_catch_up_is_bounded_and_charged_to_the_rate_limit(
    test_env: dict[str, str],
    provider: KeyProvider,
    serve: Any,
    store: OrderStore,
    new_order: Callable[..., Order],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(live, "CATCH_UP_ENTRIES", 1000)  # 10 requests' worth at 100 an entry
    first, second = new_order(user_id=USER_A), new_order(user_id=USER_A)
    await store.create(first)
    noise = await _noise(store, 1500)
    await store.create(second)
    settings = oidc_settings(test_env, provider, rate_limit_requests=20, rate_limit_window_s=600)
    a, staff = bearer(provider.token(USER_A)), bearer(provider.token(None, roles=["orders:staff"]))

    async def events(path: str, after: str, headers: dict[str, str], count: int) -> list[Any]:
        seen = []
        async with (
            asyncio.timeout(20),
            client.stream("GET", path, headers={**headers, "Last-Event-ID": after}) as r,
        ):
            assert r.status_code == 200
            async for event in read_events(r):
                seen.append(event)
                if len(seen) == count:
                    return seen
        return seen

    async with serve(settings) as client:
        # Not too far behind (700 entries): every own event after the position, once.
        near = await events("/api/orders/events", noise[800], a, 1)
        assert [(e.event, e.json()["orderId"]) for e in near] == [("PLACED", second.order_id)]
        # Further behind than one catch-up reads: a reset, as for a trimmed position.
        far = await events("/api/orders/events", "0-0", a, 2)
        assert [e.event for e in far] == ["PLACED", "reset"]  # what the 1000 entries read held, then
        assert far[1].json()["lastEventId"] == noise[998]  # the last entry read
        one = await events(f"/api/orders/{first.order_id}/events", noise[0], a, 2)
        assert [e.event for e in one] == ["reset", "PLACED"]  # then the order as it is now
        # Staff catch up as before, however far.
        all_of_a = await events(f"/api/orders/events?userId={USER_A}", "0-0", staff, 2)
        assert [e.json()["orderId"] for e in all_of_a] == [first.order_id, second.order_id]
        # What was read was charged: 3 requests, 7 + 10 + 10 pages of 100 entries: 30 > 20.
        limited = await client.get("/api/orders", headers=a)
        assert limited.status_code == 429


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


async def test_429_with_retry_after_across_two_instances_sharing_redis(
    test_env: dict[str, str], provider: KeyProvider, orders: dict[int, Order], serve: Any
) -> None:
    settings = oidc_settings(test_env, provider, rate_limit_requests=6, rate_limit_window_s=600)
    a, b = bearer(provider.token(USER_A)), bearer(provider.token(USER_B))
    async with serve(settings) as one, serve(settings) as two:
        codes = [(await (one if n % 2 else two).get("/api/orders", headers=a)).status_code for n in range(6)]
        assert codes == [200] * 6
        for instance in (one, two):
            limited = await instance.get("/api/orders", headers=a)
            assert limited.status_code == 429
            assert 1 <= int(limited.headers["retry-after"]) <= 600
            assert limited.json()["success"] is False
        # Another principal has a budget of its own.
        assert (await one.get("/api/orders", headers=b)).status_code == 200


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
    create_app(Settings(bind_host="0.0.0.0", auth_mode="none"))  # said on purpose
