"""A Redis that refuses commands (full, read-only, loading, busy, redirecting) answers 503 with
Retry-After and one log line, never a 500; a full Redis still takes the abandon mark, and the
write probe of readiness says it refuses writes. The Redis cases run against a real Redis,
filled for the test (orders_stack.ledger.redis_full).
"""

import logging
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    MovedError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from starlette.responses import Response

from orders_contract.models import Order
from orders_readmodel.store import OrderStore
from orders_readmodel.stream import UpdateStream
from orders_stack.ledger import redis_full
from orders_web.fastpath import direct, include
from orders_web.http import NotReady, install_common, redis_error_text, redis_refusal, redis_write_check

OOM_TEXT = "command not allowed when used memory > 'maxmemory'."
PIPELINED = f"Command # 1 (HGETALL order:1) of pipeline caused error: ({OOM_TEXT!r},)"


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (OutOfMemoryError(OOM_TEXT, status_code="OOM"), "OOM"),
        (OutOfMemoryError(PIPELINED, status_code="OOM"), "OOM"),
        (ReadOnlyError("You can't write against a read only replica.", status_code="READONLY"), "READONLY"),
        (BusyLoadingError("Redis is loading the dataset in memory", status_code="LOADING"), "LOADING"),
        (ResponseError("BUSY Redis is busy running a script."), "BUSY"),
        (ResponseError("Command # 2 (FCALL x 0) of pipeline caused error: ('BUSY Redis is busy',)"), "BUSY"),
        (ResponseError("NOREPLICAS Not enough good replicas to write."), "NOREPLICAS"),
        (MasterDownError("Link with MASTER is down", status_code="MASTERDOWN"), "MASTERDOWN"),
        (TryAgainError("Multiple keys request during rehashing", status_code="TRYAGAIN"), "TRYAGAIN"),
        (ClusterDownError("The cluster is down", status_code="CLUSTERDOWN"), "CLUSTERDOWN"),
        (MovedError("3999 127.0.0.1:6381", status_code="MOVED"), "MOVED"),
        (AskError("3999 127.0.0.1:6381", status_code="ASK"), "ASK"),
        (ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), None),
        (ResponseError("ERR Error running script (call to f_x): user_script:1: boom"), None),
        (RedisConnectionError("Error 111 connecting to 127.0.0.1:1."), None),
        (ValueError("OOM"), None),
    ],
)
def test_refusals_are_told_from_bugs(exc: Exception, code: str | None) -> None:
    assert redis_refusal(exc) == code


def test_error_text_is_one_readable_line_code_first() -> None:
    assert redis_error_text(OutOfMemoryError(PIPELINED, status_code="OOM")) == f"OOM {OOM_TEXT}"
    assert redis_error_text(OutOfMemoryError(OOM_TEXT, status_code="OOM")) == f"OOM {OOM_TEXT}"
    assert redis_error_text(ResponseError("BUSY Redis is\nbusy")) == "BUSY Redis is busy"


def refusing_app(exc: Exception) -> FastAPI:
    """An app whose routes (a plain one and a direct one) raise `exc`."""
    app = FastAPI()
    install_common(app)

    @app.get("/plain")
    async def plain() -> Response:
        raise exc

    router = APIRouter()

    @direct(router, "POST", "/direct")
    async def fast() -> Response:
        raise exc

    include(app, router)
    return app


@pytest.mark.parametrize(
    "exc",
    [OutOfMemoryError(PIPELINED, status_code="OOM"), ResponseError("BUSY Redis is busy running a script.")],
)
async def test_a_refusal_is_a_503_with_retry_after_and_one_log_line(
    exc: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    app = refusing_app(exc)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for method, path in (("GET", "/plain"), ("POST", "/direct")):
            caplog.clear()
            with caplog.at_level(logging.WARNING):
                response = await client.request(method, path)
            assert response.status_code == 503, path
            assert response.headers["Retry-After"] == "1"
            assert response.json()["success"] is False
            assert len(caplog.records) == 1, [r.getMessage() for r in caplog.records]
            (record,) = caplog.records
            assert record.levelno == logging.WARNING
            assert record.exc_info is None, "no traceback: a refusal is not a bug"
            assert path in record.getMessage()
            assert redis_error_text(exc) in record.getMessage()


async def test_other_error_replies_stay_500_with_their_traceback(caplog: pytest.LogCaptureFixture) -> None:
    app = refusing_app(ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        with caplog.at_level(logging.WARNING):
            response = await client.post("/direct")
    assert response.status_code == 500
    assert "Retry-After" not in response.headers
    assert any(r.exc_info for r in caplog.records)


async def test_write_check_says_redis_refuses_writes() -> None:
    async def full() -> None:
        raise OutOfMemoryError(OOM_TEXT, status_code="OOM")

    async def buggy() -> None:
        raise ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")

    with pytest.raises(NotReady, match=r"^refuses writes \(OOM command not allowed"):
        await redis_write_check(full)()
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await redis_write_check(buggy)()


# -- against a real Redis, filled for the test ---------------------------------------------


@pytest.fixture
async def full(store: OrderStore) -> AsyncIterator[OrderStore]:
    """`store` on a Redis that is full (maxmemory reached, noeviction) for the test; its
    Functions library loaded before (as the services do at start: a full Redis refuses
    FUNCTION LOAD)."""
    await store.load_functions()
    async with redis_full(store.redis, store.keys.prefix + "filler"):
        yield store


@pytest.mark.redis
async def test_a_full_redis_refuses_writes_but_takes_the_abandon_mark(
    full: OrderStore, new_order: Callable[..., Order]
) -> None:
    order = new_order()
    with pytest.raises(OutOfMemoryError):
        await full.create(order, "event-1")
    with pytest.raises(NotReady, match=r"refuses writes \(OOM "):
        await redis_write_check(lambda: full.check_writes("api"))()
    assert await full.abandon([(order.order_id, "event-1")], ttl_s=60) is False  # allow-oom
    assert await full.redis.sismember(full.keys.abandoned(order.order_id), "event-1")
    assert 0 < await full.redis.ttl(full.keys.abandoned(order.order_id)) <= 60


@pytest.mark.redis
async def test_the_abandon_mark_written_while_full_holds_once_redis_has_room(
    store: OrderStore, new_order: Callable[..., Order]
) -> None:
    order = new_order()
    await store.load_functions()
    async with redis_full(store.redis, store.keys.prefix + "filler"):
        assert await store.abandon([(order.order_id, "event-1")], ttl_s=60) is False
    result = await store.start(order, "event-1")  # the processor, once Redis has room again
    assert result.abandoned
    assert await store.get(order.order_id) is None
    await store.check_writes("api")  # and readiness is back


@pytest.mark.redis
async def test_a_full_redis_refuses_even_reads_queued_in_multi(
    full: OrderStore, new_order: Callable[..., Order]
) -> None:
    order = new_order()
    assert await full.get(order.order_id) is None  # a plain read is served
    with pytest.raises(OutOfMemoryError) as refused:  # the snapshot reads in MULTI
        await UpdateStream(full.redis, full.keys).snapshot(order.order_id)
    assert redis_refusal(refused.value) == "OOM"


@pytest.mark.redis
async def test_redis_full_restores_the_config(store: OrderStore) -> None:
    before = await store.redis.config_get("maxmemory*")
    async with redis_full(store.redis, store.keys.prefix + "filler"):
        assert await store.redis.config_get("maxmemory") != {"maxmemory": before["maxmemory"]}
    assert await store.redis.config_get("maxmemory*") == before
    assert not await store.redis.exists(store.keys.prefix + "filler")
