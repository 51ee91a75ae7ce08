"""Service metrics: request latency by route template and status, one registry per app, the
Prometheus text format, Redis connections counted by the server, dead workers' live gauges."""

import asyncio
import os
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import BlockingConnectionPool, Redis
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse, Response

from orders_stack import Infra
from orders_web.fastpath import direct, include
from orders_web.http import NO_TELEMETRY, install_common
from orders_web.metrics import MULTIPROCESS_DIR_ENV, UNMATCHED, RequestMetrics, ServiceMetrics

DURATION = "tiny_http_request_duration_seconds"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape: (name, labels) -> value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scraped(metrics: ServiceMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return samples(bytes((await metrics.render()).body).decode())


def requests_seen(text: str, method: str, route: str, status: int) -> float:
    labels = frozenset({"method": method, "route": route, "status": str(status)}.items())
    return samples(text).get((f"{DURATION}_count", labels), 0.0)


def tiny_app(metrics: ServiceMetrics) -> FastAPI:
    """An app with the services' middleware, a router route, a direct route and failing routes."""
    app = FastAPI(telemetry=NO_TELEMETRY)
    install_common(app)
    app.add_middleware(RequestMetrics, metrics=metrics)
    routes = APIRouter(prefix="/api")

    @routes.get("/orders/{orderId}")
    async def order(orderId: str) -> Response:
        if orderId == "unknown":
            raise HTTPException(404, "no such order")
        return PlainTextResponse(orderId)

    @routes.get("/boom")
    async def boom() -> Response:
        raise RuntimeError("a bug")

    fast = APIRouter()

    @direct(fast, "GET", "/fast/{thingId}")
    async def thing(thingId: str) -> Response:
        return PlainTextResponse(thingId)

    include(app, routes, fast, metrics.router())
    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=tiny_app(ServiceMetrics("tiny")), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


async def test_requests_are_labelled_by_route_template_and_status(client: httpx.AsyncClient) -> None:
    for path in ("/api/orders/1", "/api/orders/2", "/api/orders/unknown", "/fast/a", "/api/boom"):
        await client.get(path)
    await client.post("/api/orders/1")  # the route exists, not for POST: 405
    text = (await client.get("/metrics")).text
    assert requests_seen(text, "GET", "/api/orders/{orderId}", 200) == 2
    assert requests_seen(text, "GET", "/api/orders/{orderId}", 404) == 1
    assert requests_seen(text, "POST", "/api/orders/{orderId}", 405) == 1
    assert requests_seen(text, "GET", "/fast/{thingId}", 200) == 1, "direct routes are labelled too"
    assert requests_seen(text, "GET", "/api/boom", 500) == 1
    assert "/api/orders/1" not in text, "never the raw path"


async def test_unmatched_paths_share_one_label(client: httpx.AsyncClient) -> None:
    for n in range(5):
        assert (await client.get(f"/scan/{n}")).status_code == 404
    await client.request("BREW", "/pot")
    text = (await client.get("/metrics")).text
    assert requests_seen(text, "GET", UNMATCHED, 404) == 5
    assert requests_seen(text, "OTHER", UNMATCHED, 404) == 1
    assert "/scan/" not in text
    assert "BREW" not in text


async def test_docs_routes_are_labelled_by_their_path(client: httpx.AsyncClient) -> None:
    assert (await client.get("/openapi.json")).status_code == 200
    text = (await client.get("/metrics")).text
    assert requests_seen(text, "GET", "/openapi.json", 200) == 1


async def test_the_scrape_is_the_prometheus_text_format(client: httpx.AsyncClient) -> None:
    await client.get("/api/orders/1")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert f"# TYPE {DURATION} histogram" in response.text
    assert f'{DURATION}_bucket{{le="+Inf",method="GET",route="/api/orders/{{orderId}}",status="200"}}' in (
        response.text
    )
    assert "_created" not in response.text
    openmetrics = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")
    malformed = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=x"})
    assert malformed.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"


async def test_two_apps_in_one_process_keep_their_own_registries() -> None:
    first, second = ServiceMetrics("tiny"), ServiceMetrics("tiny")  # same names: no clash
    apps = [tiny_app(first), tiny_app(second)]
    texts = []
    for n, app in enumerate(apps):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            for _ in range(n + 1):
                await c.get("/api/orders/1")
            texts.append((await c.get("/metrics")).text)
    assert [requests_seen(text, "GET", "/api/orders/{orderId}", 200) for text in texts] == [1, 2]


async def test_counters_gauges_and_process_gauges_carry_the_service_prefix() -> None:
    metrics = ServiceMetrics("tiny")
    metrics.counter("things", "Things.").inc(3)
    metrics.gauge("open", "Open now.").set(2)
    metrics.process_gauge("pid", "This process.", os.getpid)
    found = await scraped(metrics)
    assert found[("tiny_things_total", frozenset())] == 3
    assert found[("tiny_open", frozenset())] == 2
    assert found[("tiny_pid", frozenset())] == os.getpid()


@pytest.mark.redis
async def test_redis_connections_are_counted_by_the_server_and_none_is_left_in_use(infra: Infra) -> None:
    metrics = ServiceMetrics("tiny")
    redis = Redis.from_pool(BlockingConnectionPool.from_url(infra.redis_url, max_connections=8))
    metrics.watch_redis(redis)
    other = Redis.from_url(infra.redis_url)  # an unnamed client: not counted
    try:
        await other.ping()
        await asyncio.gather(*(redis.ping() for _ in range(20)))
        opened = sum(n for n, _ in redis.connection_pool.get_connection_count())
        found = await scraped(metrics)
        assert found[("tiny_redis_connections", frozenset())] == opened >= 1
        assert found[("tiny_redis_connections_in_use", frozenset())] == 0
        clients = await other.client_list()
        assert sum(c["name"] == metrics.client_name("reads") for c in clients) == opened
    finally:
        await redis.aclose()
        await other.aclose()


_WRITER = textwrap.dedent(
    """
    import sys
    from orders_web.metrics import ServiceMetrics

    metrics = ServiceMetrics("tiny")
    metrics.gauge("open", "Open now.").set(3)
    metrics.counter("things", "Things.").inc(5)
    print("written", flush=True)
    sys.stdin.read()  # until the test closes it
    """
)


async def test_a_dead_workers_live_gauges_stop_counting_and_its_counters_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, MULTIPROCESS_DIR_ENV: str(tmp_path)}
    pipe = asyncio.subprocess.PIPE
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _WRITER, env=env, stdin=pipe, stdout=pipe
    )
    try:
        assert worker.stdout is not None
        assert await asyncio.wait_for(worker.stdout.readline(), 30) == b"written\n"
        monkeypatch.setenv(MULTIPROCESS_DIR_ENV, str(tmp_path))
        metrics = ServiceMetrics("tiny")  # reads the workers' files
        alive = await scraped(metrics)
        assert (alive[("tiny_open", frozenset())], alive[("tiny_things_total", frozenset())]) == (3, 5)
        await asyncio.wait_for(worker.communicate(b""), 30)  # it exits
        dead = await scraped(metrics)
        assert ("tiny_open", frozenset()) not in dead
        assert dead[("tiny_things_total", frozenset())] == 5
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
