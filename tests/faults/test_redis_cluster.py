"""Redis as a cluster of six (`make up REDIS_CLUSTER=1`): three masters with a replica each, a master lost.

The module starts its own cluster without Kafka (`Infra(redis_cluster=True, kafka_brokers=0)`),
stopped at its end whatever happened, and talks to it through redis-py's asyncio
`RedisCluster` from the seed URL the services get. A master is SIGKILLed: its replica takes
over, refuses writes while it has no replica of its own (`min-replicas-to-write 1`), and the
killed node, started again on its folder, rejoins as that replica; the shard then takes writes.
Times are printed, bounded only generously.
"""

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError, ResponseError

from orders_stack import Infra

pytestmark = [pytest.mark.faults, pytest.mark.redis, pytest.mark.timeout(180)]

# KEYS[1]: a counter; ARGV[1]: what to add. Returns the new value.
INCR_LIBRARY = """#!lua name=rcluster_{unique}
redis.register_function('rcluster_{unique}_incr', function(keys, args)
  return redis.call('INCRBY', keys[1], args[1])
end)
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    """Six Redis nodes for this module alone (no Kafka): its tests kill one."""
    started = time.monotonic()
    with Infra(
        tmp_path_factory.mktemp("rcluster"), kafka_port=0, redis_port=0, kafka_brokers=0, redis_cluster=True
    ) as running:
        print(f"Redis Cluster: six nodes up and ready {time.monotonic() - started:.1f}s after start")
        yield running


@pytest.fixture
async def client(cluster: Infra) -> AsyncIterator[RedisCluster]:
    redis = RedisCluster.from_url(cluster.redis_url, decode_responses=True)
    try:
        yield redis
    finally:
        await redis.aclose()


def _spread(client: RedisCluster, unique: str) -> dict[int, str]:
    """A key on each master, by the master's port."""
    keys: dict[int, str] = {}
    for n in range(1000):
        key = f"rcluster:{unique}:{n}"
        node = client.get_node_from_key(key)
        assert node is not None
        keys.setdefault(int(node.port), key)
        if len(keys) == 3:
            return keys
    raise AssertionError(f"keys found on {sorted(keys)} only")


async def test_six_nodes_three_masters_a_replica_each_writes_and_functions(
    cluster: Infra, client: RedisCluster, unique: str
) -> None:
    assert cluster.redis_env == {"REDIS_CLUSTER": "1", "REDIS_SHARDS": "3", "REDIS_WAIT_REPLICAS": "1"}
    assert cluster.redis_url == f"redis://127.0.0.1:{cluster.redis_nodes[0].port}/0"
    for node in cluster.redis_nodes:
        assert node.proc is not None
        assert node.info("server")["process_id"] == node.proc.pid, "the process killed is Redis itself"
    # The client's node list comes from CLUSTER SLOTS, which leaves out a replica whose
    # replication offset is still 0 (nothing written yet): CLUSTER NODES names all six.
    nodes: dict[str, Any] = await client.cluster_nodes()
    assert sorted(int(addr.rsplit(":", 1)[1]) for addr in nodes) == sorted(
        n.port for n in cluster.redis_nodes
    )
    masters = {addr: node for addr, node in nodes.items() if "master" in node["flags"]}
    assert len(masters) == 3
    assert all(node["slots"] for node in masters.values())
    replicas = [node for node in nodes.values() if "slave" in node["flags"]]
    assert sorted(node["master_id"] for node in replicas) == sorted(n["node_id"] for n in masters.values())
    primaries = {node.port for node in client.get_primaries()}
    assert {int(addr.rsplit(":", 1)[1]) for addr in masters} == primaries == set(cluster.redis_masters())
    followed = {}
    for node in cluster.redis_nodes:
        replication = node.info("replication")
        if node.port in primaries:
            assert replication["connected_slaves"] == 1
            assert replication["slave0"]["state"] == "online"
        else:
            assert replication["master_link_status"] == "up"
            followed[node.port] = replication["master_port"]
    assert sorted(followed.values()) == sorted(primaries), "each master has exactly one replica"

    keys = _spread(client, unique)
    for port, key in keys.items():
        assert await client.set(key, str(port))
    assert [await client.get(key) for key in keys.values()] == [str(port) for port in keys]

    # FUNCTION LOAD goes to every primary (redis-py's routing of it); replicas copy it.
    await client.function_load(INCR_LIBRARY.format(unique=unique))
    for key in keys.values():
        counter = f"{{{key}}}:n"  # the key's hash tag: the same master
        assert await client.fcall(f"rcluster_{unique}_incr", 1, counter, 2) == 2
        assert await client.fcall(f"rcluster_{unique}_incr", 1, counter, 3) == 5


async def _write_within(client: RedisCluster, key: str, value: str, seconds: float) -> None:
    """A write through the cluster client, asked again until `seconds` pass: during and just
    after a failover it raises (connection errors, NOREPLICAS) rather than wait."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            assert await client.set(key, value)
            return
        except RedisError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_a_master_killed_its_replica_takes_over_and_it_rejoins_as_a_replica(
    cluster: Infra, client: RedisCluster, unique: str
) -> None:
    await client.initialize()
    victim_port, key = next(iter(_spread(client, unique).items()))
    incr = f"rcluster_{unique}_incr"
    await client.function_load(INCR_LIBRARY.format(unique=unique))
    counter = f"{{{key}}}:n"
    assert await client.fcall(incr, 1, counter, 1) == 1
    victim = next(node for node in cluster.redis_nodes if node.port == victim_port)
    with victim.client() as direct:
        assert direct.set(key, "before")
        assert direct.wait(1, 2000) == 1, "the replica has the write before its master dies"
        heir_port = direct.info("replication")["slave0"]["port"]
    heir = next(node for node in cluster.redis_nodes if node.port == heir_port)

    killed = time.monotonic()
    await asyncio.to_thread(cluster.kill_redis_node, victim_port)
    assert victim.proc is None
    while heir.info("replication")["role"] != "master":
        assert time.monotonic() - killed < 30, "the replica was not promoted within 30 s"
        await asyncio.sleep(0.1)
    promoted = time.monotonic() - killed
    print(f"master {victim_port} SIGKILLed: its replica {heir_port} was promoted {promoted:.1f}s later")
    masters = cluster.redis_masters()
    assert heir_port in masters, masters
    assert victim_port not in masters, masters
    assert len(masters) == 3, masters
    with heir.client() as direct:
        assert direct.get(key) == "before"
        with pytest.raises(ResponseError, match="NOREPLICAS"):
            direct.set(key, "alone")  # no replica of its own: min-replicas-to-write 1

    restarted = time.monotonic()
    await asyncio.to_thread(cluster.start_redis_node, victim.number)
    replication = victim.info("replication")
    assert (replication["role"], replication["master_port"]) == ("slave", heir_port)
    masters = cluster.redis_masters()
    assert heir_port in masters, masters
    assert victim_port not in masters, masters
    assert len(masters) == 3, masters
    await _write_within(client, key, "after", 30)
    took = time.monotonic() - killed
    print(
        f"node {victim_port} rejoined as {heir_port}'s replica {time.monotonic() - restarted:.1f}s after "
        f"its restart; the shard took a write {took:.1f}s after the SIGKILL"
    )
    assert await client.get(key) == "after"
    assert await client.fcall(incr, 1, counter, 1) == 2, "the promoted replica has the function"


def test_a_cluster_that_cannot_form_leaves_no_node_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`redis-cli --cluster create` fails (a stand-in that exits 1): the start raises, and the
    six nodes it had started are stopped."""
    fake = tmp_path / "bin" / "redis-cli"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'no cluster today' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    infra = Infra(tmp_path / "data", kafka_port=0, redis_port=0, kafka_brokers=0, redis_cluster=True)
    with pytest.raises(RuntimeError, match="no cluster today"):
        infra.start()
    assert len(infra.redis_nodes) == 6
    assert infra.procs == []
    assert all(node.proc is None for node in infra.redis_nodes)
    for node in infra.redis_nodes:  # all six had answered before the create was tried
        with pytest.raises(RedisError):
            node.client().ping()
