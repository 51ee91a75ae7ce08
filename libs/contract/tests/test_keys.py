"""The read model's key layout: one shard is the layout as it was; shards spread over the slots."""

from collections import Counter

import pytest
from redis.crc import key_slot as redis_key_slot

from orders_contract.keys import SLOTS, Keys, key_slot, shard_of, shard_tags
from orders_contract.models import new_order_id

# How `redis-cli --cluster create` splits the slots between 3 and 6 masters.
MASTERS = {3: [(0, 5460), (5461, 10922), (10923, 16383)]}


def test_one_shard_is_the_layout_as_it_was() -> None:
    k = Keys("p:")
    assert (k.order("x"), k.history("x"), k.abandoned("x")) == (
        "p:order:x",
        "p:order:x:history",
        "p:order:x:abandoned",
    )
    assert (k.all_orders(0), k.by_user(7, 0), k.by_status("PLACED", 0)) == (
        "p:orders:all",
        "p:orders:user:7",
        "p:orders:status:PLACED",
    )
    assert (k.updates(0), k.relay_lease(0)) == ("p:orders:updates", "p:relay:lease")


@pytest.mark.parametrize("key", ["orders:all", "a{b}c", "{}x", "x{}y{z}", "{user1000}.following", "é{ü}"])
def test_slots_are_redis_clusters(key: str) -> None:
    assert key_slot(key) == redis_key_slot(key.encode())


@pytest.mark.parametrize("shards", [2, 3, 4, 6, 12])
def test_each_shards_keys_share_one_slot_and_the_shards_spread_evenly(shards: int) -> None:
    k = Keys("p:", shards)
    slots = []
    for shard in range(shards):
        order_id = new_order_id(shard, shards)
        assert k.shard_of(order_id) == shard
        names = [k.order(order_id), k.history(order_id), k.abandoned(order_id), k.all_orders(shard)]
        names += [k.by_user(7, shard), k.by_status("PLACED", shard), k.updates(shard), k.relay_lease(shard)]
        assert len({redis_key_slot(n.encode()) for n in names}) == 1, names
        slots.append(key_slot(names[0]))
        assert shard * SLOTS // shards <= slots[-1] < (shard + 1) * SLOTS // shards
    assert len(set(shard_tags(shards))) == shards
    for masters in (2, 3, 6):
        if shards % masters == 0:  # m masters with even slot ranges get shards / m each
            owners = Counter(slot * masters // SLOTS for slot in slots)
            assert set(owners.values()) == {shards // masters}, (shards, masters, owners)


def test_plain_tags_would_not_spread() -> None:
    """Why the tags are searched for: {s0}..{s5} put several shards on one of three masters."""
    owners = Counter(
        next(i for i, (lo, hi) in enumerate(MASTERS[3]) if lo <= key_slot(f"{{s{n}}}") <= hi)
        for n in range(6)
    )
    assert set(owners.values()) != {2}


def test_ids_of_a_shard_stay_random_and_time_ordered() -> None:
    ids = [new_order_id(2, 3) for _ in range(500)]
    assert ids == sorted(ids)
    assert {shard_of(i, 3) for i in ids} == {2}
    assert len({i[-8:] for i in ids}) == 500
    assert Counter(shard_of(new_order_id(), 3) for _ in range(3000)).keys() == {0, 1, 2}


def test_a_prefix_with_braces_is_refused_when_sharded() -> None:
    Keys("a{b}:")
    with pytest.raises(ValueError, match="hash tags"):
        Keys("a{b}:", 3)
