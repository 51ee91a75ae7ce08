"""Issue 12: the stats route's bounded cost (item 4), and one paging rule for every list (item 7)."""

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from orders_contract.models import Order
from orders_readmodel.store import OrderStore
from orders_readmodel.stream import UpdateStream

from .test_reads import client

__all__ = ["client"]  # the fixture, imported for the tests below

pytestmark = pytest.mark.redis


@pytest.mark.parametrize(("seconds", "status"), [(300, 200), (1, 200), (301, 400), (3600, 400), (0, 400)])
async def test_stats_window_is_at_most_300_seconds(
    client: httpx.AsyncClient, seconds: int, status: int
) -> None:
    response = await client.get("/api/orders/stats", params={"seconds": seconds})
    assert response.status_code == status
    if status == 200:
        data = response.json()["data"]
        assert set(data) == {"counts", "total", "perSecond", "since", "now", "position"}
        assert len(data["perSecond"]) == seconds
    else:
        assert response.json()["errors"][0]["field"] == "seconds"


async def test_stats_is_one_command_in_one_round_trip(
    store: OrderStore, new_order: Callable[..., Order], monkeypatch: pytest.MonkeyPatch
) -> None:
    orders = [new_order() for _ in range(3)]
    for order in orders:
        await store.create(order)
    sent: list[tuple[Any, ...]] = []
    pipelines = []
    real: Callable[..., Any] = store.redis.pipeline

    def counting(*args: Any, **kwargs: Any) -> Any:
        """Every pipeline the store opens, recording the commands queued on it."""
        pipe = real(*args, **kwargs)
        queue = pipe.pipeline_execute_command
        pipelines.append(pipe)

        def record(*words: Any, **options: Any) -> Any:
            sent.append(words)
            return queue(*words, **options)

        pipe.pipeline_execute_command = record
        return pipe

    monkeypatch.setattr(store.redis, "pipeline", counting)
    now = int(time.time() * 1000)
    since = now // 1000 * 1000 - 299 * 1000
    stats = await store.stats(since, 300)
    assert len(pipelines) == 1
    assert len(sent) == 1
    assert sent[0][:2] == ("FCALL_RO", "orders_stats")
    assert len(stats.per_second) == 300
    assert sum(stats.per_second[-3:]) >= 3  # the orders just created, in the last seconds
    assert stats.counts[orders[0].status] >= 3
    monkeypatch.undo()
    assert stats.head == await UpdateStream(store.redis, store.keys).head()
    with pytest.raises(ValueError, match="seconds"):
        await store.stats(since, 301)


async def test_stats_counts_each_second_by_the_ids_time(
    store: OrderStore, new_order: Callable[..., Order]
) -> None:
    order = new_order()
    await store.create(order)
    ms = int(order.order_id.replace("-", "")[:12], 16)  # the UUIDv7's millisecond
    second = ms // 1000 * 1000
    stats = await store.stats(second - 2000, 5)
    assert stats.per_second[2] >= 1  # this order's second
    alone = await store.stats(second + 1000, 1)  # the next second does not count it
    before = await store.stats(second - 1000, 1)
    own = await store.stats(second, 1)
    assert own.per_second[0] >= 1
    assert sum(alone.per_second) + sum(before.per_second) + own.per_second[0] <= sum(stats.per_second)


LIMITS = ["+5", "9" * 5001, "0", "abc", "1_000", "5", " 5", "-1", "1e3", "1000000"]


@pytest.mark.parametrize("limit", LIMITS)
async def test_every_list_answers_a_limit_the_same_way(client: httpx.AsyncClient, limit: str) -> None:
    answers = []
    for path in ("/api/orders", "/api/orders/user/7", "/api/orders/status/completed"):
        response = await client.get(path, params={"limit": limit})
        body = response.json()
        answers.append(
            (
                response.status_code,
                body.get("page", {}).get("limit"),
                [(e["field"], e["reason"]) for e in body.get("errors") or []],
            )
        )
    assert answers[0] == answers[1] == answers[2], answers
    assert answers[0][0] == (200 if limit in ("9" * 5001, "5", "1000000") else 400)
