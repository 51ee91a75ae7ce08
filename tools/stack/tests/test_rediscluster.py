"""The Redis Cluster's plan, without starting it: ports, each node's settings, what the services are told."""

import itertools
from pathlib import Path

import pytest

from orders_stack import Infra, Stack
from orders_stack.rediscluster import NODE_CONFIG, RedisNode, node_ports


def test_a_given_port_and_the_five_after_it_buses_10000_above() -> None:
    assert node_ports(6379, lambda: 1) == [(6379 + n, 16379 + n) for n in range(6)]
    with pytest.raises(ValueError, match="65535"):
        node_ports(60000, lambda: 1)


def test_port_0_takes_free_ports_for_clients_and_buses() -> None:
    counter = itertools.count(40000)
    assert node_ports(0, lambda: next(counter)) == [(40000 + 2 * n, 40001 + 2 * n) for n in range(6)]


def test_each_node_has_its_folder_ports_and_the_cluster_settings(tmp_path: Path) -> None:
    lines = RedisNode(2, 7001, 17001, tmp_path / "redis-2").config()
    assert lines[:6] == [
        "bind 127.0.0.1",
        "protected-mode yes",
        "port 7001",
        "cluster-port 17001",
        f"dir {tmp_path / 'redis-2'}",
        f"cluster-config-file {tmp_path / 'redis-2' / 'nodes.conf'}",
    ]
    for line in (
        "cluster-enabled yes",
        "appendonly yes",
        "cluster-node-timeout 2000",
        "min-replicas-to-write 1",
    ):
        assert line in NODE_CONFIG
        assert line in lines


def test_the_services_are_told_of_a_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDIS_CLUSTER", "REDIS_SHARDS"):
        monkeypatch.delenv(name, raising=False)
    one = Stack(Infra(tmp_path)).service_env()
    assert "REDIS_CLUSTER" not in one
    assert "REDIS_SHARDS" not in one
    infra = Infra(tmp_path, redis_port=7000, redis_cluster=True)
    env = Stack(infra).service_env()
    assert (env["REDIS_CLUSTER"], env["REDIS_SHARDS"]) == ("1", "3")
    assert env["REDIS_URL"] == "redis://127.0.0.1:7000/0", "the seed: the first node"
    assert infra.redis_nodes == [], "none until it starts"
    with pytest.raises(RuntimeError, match="not a Redis Cluster"):
        Infra(tmp_path).redis_masters()
