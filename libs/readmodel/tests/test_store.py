"""The read model against a real Redis: its Functions library, atomic, idempotent transitions
and paginated indexes. The update stream's reads are tested in test_stream.py.
"""

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from orders_contract.keys import Keys
from orders_contract.models import Order, order_json
from orders_contract.models import OrderStatus as S
from orders_readmodel.store import LIBRARY, Index, InvalidCursor, OrderStore, decode_cursor, encode_cursor
from orders_readmodel.stream import START
from orders_stack.ledger import compare_read_models

pytestmark = pytest.mark.redis

NewOrder = Callable[..., Order]


async def snapshot(store: OrderStore, order: Order) -> tuple[Any, ...]:
    """Everything the store keeps about one order."""
    r: Redis = store.redis
    k, shard = store.keys, store.keys.shard_of(order.order_id)
    statuses = {s for s in S if await r.zscore(k.by_status(s, shard), order.order_id) is not None}
    return (
        await r.hgetall(k.order(order.order_id)),
        await r.lrange(k.history(order.order_id), 0, -1),
        statuses,
        await r.xlen(k.updates(shard)),
    )


async def test_create_is_idempotent(store: OrderStore, new_order: NewOrder) -> None:
    order = new_order()
    first = await store.create(order)
    assert (first.applied, first.status, first.version, first.created) == (True, S.PLACED, 1, True)
    before = await snapshot(store, order)
    again = await store.create(order)
    assert (again.applied, again.status, again.version, again.created) == (False, S.PLACED, 1, False)
    assert await snapshot(store, order) == before
    assert await store.get(order.order_id) == order


async def test_lifecycle_records_times_history_and_stream(store: OrderStore, new_order: NewOrder) -> None:
    order = new_order()
    await store.create(order)
    assert (await store.transition(order.order_id, S.PROCESSING)).version == 2
    assert (await store.transition(order.order_id, S.COMPLETED)).version == 3
    done = await store.get(order.order_id)
    assert done is not None
    assert done.status is S.COMPLETED
    assert done.version == 3
    assert done.created_at <= (done.processed_at or "") <= (done.completed_at or "")
    history = await store.history(order.order_id)
    assert [(h.status, h.version) for h in history] == [(S.PLACED, 1), (S.PROCESSING, 2), (S.COMPLETED, 3)]
    updates: Any = await store.redis.xrange(store.keys.updates(0))
    assert [u["status"] for _, u in updates] == ["PLACED", "PROCESSING", "COMPLETED"]
    assert (await snapshot(store, order))[2] == {S.COMPLETED}


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        ([], S.COMPLETED),  # PLACED cannot skip PROCESSING
        ([S.PROCESSING], S.CANCELLED),  # too late to cancel
        ([S.PROCESSING], S.PROCESSING),  # already applied
        ([S.PROCESSING, S.COMPLETED], S.FAILED),  # final
        ([S.CANCELLED], S.PROCESSING),  # final
    ],
)
async def test_refused_transitions_change_nothing(
    store: OrderStore, new_order: NewOrder, path: list[S], refused: S
) -> None:
    order = new_order()
    await store.create(order)
    for status in path:
        assert (await store.transition(order.order_id, status)).applied
    before = await snapshot(store, order)
    result = await store.transition(order.order_id, refused)
    assert not result.applied
    assert result.status is (path[-1] if path else S.PLACED)
    assert await snapshot(store, order) == before


async def test_unknown_order(store: OrderStore) -> None:
    result = await store.transition("00000000-0000-7000-8000-000000000000", S.PROCESSING)
    assert (result.applied, result.status) == (False, None)
    assert await store.get("00000000-0000-7000-8000-000000000000") is None


async def test_racing_transitions_apply_once(store: OrderStore, new_order: NewOrder) -> None:
    order = new_order()
    await store.create(order)
    results = await asyncio.gather(
        *(store.transition(order.order_id, s) for s in [S.PROCESSING, S.CANCELLED] * 25)
    )
    assert sum(r.applied for r in results) == 1
    history = await store.history(order.order_id)
    assert len(history) == 2
    assert len((await snapshot(store, order))[2]) == 1  # in exactly one status index


async def test_pages_are_newest_first_and_complete(store: OrderStore, new_order: NewOrder) -> None:
    orders = [new_order(user_id=42) for _ in range(7)]
    for order in orders:
        await store.create(order)
    await store.create(new_order(user_id=43))
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = await store.page(partial(store.keys.by_user, 42), 3, cursor)
        seen += [o["orderId"] for o in page]
        assert len(page) <= 3
        if cursor is None:
            break
    assert seen == sorted((o.order_id for o in orders), reverse=True)
    all_page, last = await store.page(store.keys.all_orders, 100)
    assert len(all_page) == 8
    assert last is None
    # The JSON form read without pydantic is exactly the model's.
    assert all_page[1:] == [o.model_dump(mode="json") for o in reversed(orders)]
    assert await store.get_json(orders[0].order_id) == orders[0].model_dump(mode="json")


async def test_an_empty_index_and_a_foreign_cursor(store: OrderStore) -> None:
    assert await store.page(partial(store.keys.by_user, 999), 10) == ([], None)
    with pytest.raises(InvalidCursor):
        await store.page(store.keys.all_orders, 10, "not-a-cursor!")


async def test_an_abandoned_event_creates_nothing_but_another_does(
    store: OrderStore, new_order: NewOrder
) -> None:
    order = new_order()
    assert await store.abandon([(order.order_id, "e1")], ttl_s=60) is False
    assert (await store.create(order, "e1")).abandoned
    assert await store.get(order.order_id) is None
    assert 0 < await store.redis.ttl(store.keys.abandoned(order.order_id)) <= 60
    # A retry of the same order (same Idempotency-Key) is a new event: it creates the order.
    created = await store.create(order, "e2")
    assert (created.applied, created.abandoned) == (True, False)
    assert (await store.create(order, "e1")).status is S.PLACED  # a late e1 is a plain replay
    assert await store.abandon([(order.order_id, "e3")], ttl_s=60) is True  # exists: Kafka held it


async def test_start_creates_if_need_be_and_starts_once(store: OrderStore, new_order: NewOrder) -> None:
    written_through, not_yet = new_order(), new_order()
    await store.create(written_through)
    for order in (written_through, not_yet):
        started = await store.start(order, "e1")
        assert (started.applied, started.status, started.version) == (True, S.PROCESSING, 2)
        assert started.created is (order is not_yet), "created: only when the api had not written it"
        history = await store.history(order.order_id)
        assert [(h.status, h.version) for h in history] == [(S.PLACED, 1), (S.PROCESSING, 2)]
        assert (await snapshot(store, order))[2] == {S.PROCESSING}
        before = await snapshot(store, order)
        again = await store.start(order, "e1")  # a replay changes nothing
        assert (again.applied, again.status, again.version, again.created) == (False, S.PROCESSING, 2, False)
        assert await snapshot(store, order) == before
    got = await store.get(not_yet.order_id)
    assert got is not None
    assert got.processed_at is not None
    assert got == not_yet.model_copy(
        update={"status": S.PROCESSING, "version": 2, "processed_at": got.processed_at}
    )


async def test_start_leaves_a_cancelled_or_abandoned_order_alone(
    store: OrderStore, new_order: NewOrder
) -> None:
    cancelled, abandoned = new_order(), new_order()
    await store.create(cancelled)
    await store.transition(cancelled.order_id, S.CANCELLED)
    before = await snapshot(store, cancelled)
    refused = await store.start(cancelled)
    assert (refused.applied, refused.status, refused.version) == (False, S.CANCELLED, 2)
    assert not refused.created
    assert await snapshot(store, cancelled) == before
    await store.abandon([(abandoned.order_id, "e1")], ttl_s=60)
    ignored = await store.start(abandoned, "e1")
    assert (ignored.abandoned, ignored.created) == (True, False)
    assert await store.get(abandoned.order_id) is None


async def test_one_claim_per_idempotency_key(store: OrderStore, new_order: NewOrder) -> None:
    orders = [new_order() for _ in range(20)]
    claims = await asyncio.gather(*(store.claim("k-1", o, "fp", ttl_s=60) for o in orders))
    assert sum(c.first for c in claims) == 1
    assert len({c.order.order_id for c in claims}) == 1
    winner = next(c.order for c in claims if c.first)
    assert all(c.order == winner and c.fingerprint == "fp" for c in claims)
    other_user = await store.claim("k-1", new_order(user_id=2), "fp", ttl_s=60)
    assert other_user.first


async def test_abandoning_a_batch_is_all_or_nothing(store: OrderStore, new_order: NewOrder) -> None:
    held, others = new_order(), [new_order() for _ in range(3)]
    await store.create(held, "e0")
    events = [(o.order_id, f"e{n}") for n, o in enumerate([*others, held], start=1)]
    assert await store.abandon(events, ttl_s=60) is True  # one exists: the batch was held
    created = await store.create_all([(o, f"e{n}") for n, o in enumerate(others, start=1)])
    assert all(result.applied for result in created), "nothing was abandoned"

    batch = [new_order() for _ in range(3)]
    assert await store.abandon([(o.order_id, f"b{n}") for n, o in enumerate(batch)], ttl_s=60) is False
    refused = await store.create_all([(o, f"b{n}") for n, o in enumerate(batch)])
    assert all(result.abandoned for result in refused)


FUNCTIONS = {
    "orders_create",
    "orders_transition",
    "orders_start",
    "orders_abandon",
    "orders_claim",
    "orders_hashes_json",
    "orders_stats",
    "orders_restore",
    "orders_restore_stream",
}


async def library(redis: Redis) -> dict[str, Any]:
    """FUNCTION LIST's entry of the `orders` library, as a dict ({} when not loaded)."""
    listed: Any = await redis.function_list("orders", withcode=True)
    if not listed:
        return {}
    entry = dict(zip(listed[0][::2], listed[0][1::2], strict=True))
    functions = [dict(zip(f[::2], f[1::2], strict=True)) for f in entry["functions"]]
    entry["functions"] = {f["name"] for f in functions}
    entry["read_only"] = {f["name"] for f in functions if "no-writes" in f["flags"]}
    return entry


async def test_the_library_is_loaded_replacing_any_other(store: OrderStore, unique: str) -> None:
    assert LIBRARY.startswith("#!lua name=orders\n")
    old = "#!lua name=orders\nredis.register_function('orders_old', function(keys, args) return 1 end)"
    await store.redis.function_load(old, replace=True)  # as an older version of the store left it
    await store.load_functions()
    await store.load_functions()  # again: REPLACE, so no "library already exists"
    loaded = await library(store.redis)
    assert loaded["library_code"] == LIBRARY
    assert loaded["functions"] == FUNCTIONS
    assert loaded["read_only"] == {"orders_hashes_json", "orders_stats"}  # reads, callable with FCALL_RO
    # Callable by name with FCALL, every key passed as a key.
    key = store.keys.idempotency(1, unique)
    assert await store.redis.fcall("orders_claim", 1, key, "first", 60) is None
    assert await store.redis.fcall("orders_claim", 1, key, "second", 60) == "first"


@pytest.mark.parametrize("flush", [True, False])
async def test_the_store_recovers_once_the_library_is_gone(
    store: OrderStore, new_order: NewOrder, flush: bool
) -> None:
    await store.load_functions()
    if flush:  # as a Redis that came back empty
        await store.redis.function_flush()
    else:
        await store.redis.function_delete("orders")
    assert await library(store.redis) == {}
    orders = [new_order() for _ in range(20)]
    started = await asyncio.gather(*(store.start(order, "e") for order in orders))  # one pipeline
    assert all(result.applied for result in started)
    assert (await library(store.redis))["functions"] == FUNCTIONS
    done = await asyncio.gather(*(store.transition(o.order_id, S.COMPLETED) for o in orders))
    assert [result.version for result in done] == [3] * 20
    # A store made without load_functions, as the test fixtures make one, on a Redis without it.
    await store.redis.function_delete("orders")
    fresh = OrderStore(store.redis, store.keys)
    assert (await fresh.create(new_order())).applied
    assert await fresh.abandon([(new_order().order_id, "e1")], ttl_s=60) is False
    # The page read's FCALL_RO recovers the same way.
    await store.redis.function_delete("orders")
    page, _ = await OrderStore(store.redis, store.keys).page(store.keys.all_orders, 100)
    assert len(page) == 21


OLD_PAGE_SCRIPT = """
-- The page read as the store ran it before the Functions library, kept here as the reference
-- that the page read must still agree with: {id, its hash as JSON, id, ...}.
local function hash_json(key)
  local fields = redis.call('HGETALL', key)
  local object = {}
  for i = 1, #fields, 2 do object[fields[i]] = fields[i + 1] end
  return cjson.encode(object)
end
local ids = redis.call('ZRANGE', KEYS[1], ARGV[1], '-', 'BYLEX', 'REV', 'LIMIT', 0, ARGV[2])
local page = {}
for _, id in ipairs(ids) do
  page[#page + 1] = id
  page[#page + 1] = hash_json(ARGV[3] .. id)
end
return page
"""


async def old_page(
    store: OrderStore, index: str, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    start = f"({decode_cursor(cursor)}" if cursor else "+"
    raw: Any = await store.redis.eval(OLD_PAGE_SCRIPT, 1, index, start, limit + 1, store.keys.order(""))
    ids: list[str] = raw[::2]
    orders = [order_json(row) for row in map(orjson.loads, raw[1 : 2 * limit : 2]) if row]
    return orders, encode_cursor(ids[limit - 1]) if len(ids) > limit else None


async def test_pages_are_what_the_one_script_read_gave(store: OrderStore, new_order: NewOrder) -> None:
    orders = [new_order(user_id=50 + n % 2) for n in range(9)]
    for order in orders:
        await store.create(order)
    for order in orders[:4]:
        await store.transition(order.order_id, S.PROCESSING)
    k = store.keys
    # An id in an index without its hash (never written so): skipped by both, cursor unchanged.
    await store.redis.zadd(k.by_user(50, 0), {"ffffffff-ffff-7fff-bfff-ffffffffffff": 0})
    newest_first = sorted(orders, key=lambda o: o.order_id, reverse=True)
    expected: dict[Index, list[Order]] = {
        k.all_orders: newest_first,
        partial(k.by_user, 50): [o for o in newest_first if o.user_id == 50],
        partial(k.by_status, S.PROCESSING): [o for o in newest_first if o in orders[:4]],
        partial(k.by_status, S.FAILED): [],
    }
    for index, wanted in expected.items():
        for limit in (1, 2, 4, 100):
            seen: list[str] = []
            cursor: str | None = None
            while True:
                page = await store.page(index, limit, cursor)
                assert page == await old_page(store, index(0), limit, cursor), (index, limit, cursor)
                seen += [o["orderId"] for o in page[0]]
                cursor = page[1]
                if cursor is None:
                    break
            assert seen == [o.order_id for o in wanted], (index, limit)


async def test_the_page_reads_hashes_as_json_read_only(store: OrderStore, new_order: NewOrder) -> None:
    # Text that JSON escapes (quotes, a backslash, a slash) and text beyond ASCII.
    order = new_order().model_copy(update={"product_name": 'Café "☕" / \\ ü'})
    await store.create(order)
    k = store.keys
    missing = k.order("00000000-0000-7000-8000-000000000000")
    texts: Any = await store.redis.fcall_ro(
        "orders_hashes_json", 3, k.order(order.order_id), missing, missing
    )
    assert len(texts) == 3
    assert order_json(orjson.loads(texts[0])) == order.model_dump(mode="json")
    assert texts[1:] == ["{}", "{}"]
    assert await store.redis.fcall_ro("orders_hashes_json", 0) == []
    assert await store.page(k.all_orders, 10) == ([order.model_dump(mode="json")], None)


async def test_restore_writes_what_the_transitions_wrote(store: OrderStore, new_order: NewOrder) -> None:
    """The rebuild's writes: each transition's order, time and position (as the status events
    carry them) give the same hashes, indexes and histories, and the stream's newest entry."""
    done, started, cancelled = new_order(user_id=1), new_order(user_id=2), new_order(user_id=1)
    for order in (done, started, cancelled):
        await store.create(order)
    for order_id, status in [
        (done.order_id, S.PROCESSING),
        (started.order_id, S.PROCESSING),
        (done.order_id, S.COMPLETED),
        (cancelled.order_id, S.CANCELLED),
    ]:
        assert (await store.transition(order_id, status)).applied
    updates = await store.stream().updates_after(START)
    assert updates is not None
    events = [
        (Order.model_validate(orjson.loads(u.order_text or "")), u.at or "", u.position) for u in updates
    ]
    rebuilt = OrderStore(store.redis, Keys(store.keys.prefix + "rebuilt:"))
    assert not await rebuilt.holds_orders()
    await rebuilt.load_functions()
    before = await rebuilt.restore_all([*events, events[3]])  # and a repeat
    assert before == [0, 0, 0, 1, 1, 2, 1, None]
    await rebuilt.restore_stream(events[-1][0].order_id, events[-1][2], events[-1][1])
    assert await compare_read_models(store, rebuilt) == []

    def readable(entries: Any) -> list[tuple[str, dict[str, Any]]]:  # the order's JSON text parsed
        return [(at, {**fields, "order": orjson.loads(fields["order"])}) for at, fields in entries]

    newest = readable(await store.redis.xrevrange(store.keys.updates(0), count=1))
    assert readable(await store.redis.xrange(rebuilt.keys.updates(0))) == newest
    assert await rebuilt.holds_orders()
