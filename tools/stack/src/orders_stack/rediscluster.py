"""Redis Cluster as local processes: six redis-server nodes, three masters with a replica each.

`RedisNodes` starts the nodes (a folder, a client port and a cluster bus port each, on
127.0.0.1 only), has `redis-cli --cluster create` join them the first time (nodes that hold a
cluster already, from an earlier start on the same folders, are left to find each other) and
waits until every node says `cluster_state:ok` and every master has its replica online.
`orders_stack.stack.Infra(redis_cluster=True)` runs it; the fault tests kill and restart
nodes through it.
"""

import logging
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .procs import Proc, wait_until

__all__ = ["NODES", "NODE_CONFIG", "SHARDS", "RedisNode", "RedisNodes", "node_ports"]

log = logging.getLogger(__name__)

SHARDS = 3
"""Masters, each with a third of the slots."""
NODES = 2 * SHARDS
"""Every master has one replica."""

NODE_CONFIG = [
    "cluster-enabled yes",
    # A master that answers nobody for 2 s is failed over (its replica promoted) in about 3-4 s.
    "cluster-node-timeout 2000",
    "appendonly yes",
    "appendfsync everysec",
    'save ""',
    # A master with no replica acknowledging within 10 s refuses writes (NOREPLICAS) rather than
    # take writes no other node has. This includes a replica just promoted: its shard takes
    # writes again once a replica is back (the old master restarted, say).
    "min-replicas-to-write 1",
    "min-replicas-max-lag 10",
    # A replica's full sync starts at once; the default waits 5 s for more replicas to come.
    "repl-diskless-sync-delay 0",
]
"""Every node's settings beyond its address and folder (the compose file's nodes use them too)."""


def node_ports(first: int, free_port: Callable[[], int]) -> list[tuple[int, int]]:
    """(client port, cluster bus port) of each node: `first` and the five after it, buses 10000
    above (Redis's own default) when `first` is given; free ports for all when it is 0."""
    if not first:
        return [(free_port(), free_port()) for _ in range(NODES)]
    ports = [(first + n, first + n + 10000) for n in range(NODES)]
    if ports[-1][1] > 65535:
        raise ValueError(f"Redis Cluster on {first}: its bus ports (client port + 10000) pass 65535")
    return ports


@dataclass
class RedisNode:
    """One node: its number (1 to 6, as its folder `redis-<n>` and log say), ports, folder,
    and its process while it runs (None when it was killed)."""

    number: int
    port: int
    bus_port: int
    home: Path
    proc: Proc | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> "redis.Redis":
        """A plain (not cluster) client of this node alone: short timeouts, no retries (the
        probes ask again themselves; redis-py's default retries take over a second for a node
        that is down)."""
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_timeout=2,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )

    def info(self, section: str) -> dict[str, Any]:
        """`INFO <section>` of this node, parsed (replication: `role`, `slave0`, ...)."""
        with self.client() as client:
            found: dict[str, Any] = client.info(section)
            return found

    def cluster_info(self) -> dict[str, str]:
        """`CLUSTER INFO` of this node: `cluster_state`, `cluster_known_nodes`, ..."""
        with self.client() as client:
            found: dict[str, str] = client.cluster("INFO")
            return found

    def cluster_nodes(self) -> dict[str, dict[str, Any]]:
        """`CLUSTER NODES` as this node sees them, by address: `flags`, `master_id`, `slots`, ..."""
        with self.client() as client:
            found: dict[str, dict[str, Any]] = client.cluster("NODES")
            return found

    def config(self) -> list[str]:
        return [
            "bind 127.0.0.1",
            "protected-mode yes",  # no password, loopback only: protected mode changes nothing here
            f"port {self.port}",
            f"cluster-port {self.bus_port}",
            f"dir {self.home}",
            f"cluster-config-file {self.home / 'nodes.conf'}",
            "daemonize no",
            *NODE_CONFIG,
            "",
        ]


def _sees_whole(view: dict[str, dict[str, Any]]) -> bool:
    """A node's CLUSTER NODES names six nodes, none failing: three masters with slots and a
    replica of each."""
    flags = [set(node["flags"].split(",")) for node in view.values()]
    masters = {node["node_id"] for node in view.values() if "master" in node["flags"] and node["slots"]}
    followed = sorted(node["master_id"] for node in view.values() if "slave" in node["flags"])
    return (
        len(view) == NODES
        and not any(each & {"fail", "fail?", "handshake", "noaddr"} for each in flags)
        and len(masters) == SHARDS
        and followed == sorted(masters)
    )


@dataclass
class RedisNodes:
    """The six nodes of one cluster. Each process started is added to `procs` (the caller's
    list, which stops them all whatever happened) and taken out of it when killed."""

    nodes: list[RedisNode]
    redis_server: str
    redis_cli: str
    logs: Path
    procs: list[Proc] = field(default_factory=list)

    @classmethod
    def plan(
        cls,
        data_dir: Path,
        ports: list[tuple[int, int]],
        redis_server: str,
        redis_cli: str,
        procs: list[Proc],
    ) -> "RedisNodes":
        nodes = [RedisNode(n, port, bus, data_dir / f"redis-{n}") for n, (port, bus) in enumerate(ports, 1)]
        return cls(nodes, redis_server, redis_cli, data_dir / "logs", procs)

    @property
    def seed(self) -> RedisNode:
        return self.nodes[0]

    def node(self, node: int) -> RedisNode:
        """A node by number (1 to 6) or by port."""
        for each in self.nodes:
            if node in (each.number, each.port):
                return each
        raise KeyError(f"no Redis node numbered or on port {node}")

    def start(self, timeout: float = 60) -> Proc:
        """Start every node, join them into a cluster unless they hold one, wait until it is
        ready. Returns the seed's process."""
        for node in self.nodes:
            self._start(node)
        wait_until("Redis Cluster's nodes", self._all_answer, 30, self._running())
        if all(self._empty(node) for node in self.nodes):
            self._create()
        self.wait_ready(timeout)
        return self._seed_proc()

    def _seed_proc(self) -> Proc:
        proc = self.seed.proc
        assert proc is not None
        return proc

    def _start(self, node: RedisNode) -> Proc:
        node.home.mkdir(parents=True, exist_ok=True)
        conf = node.home / "redis.conf"
        conf.write_text("\n".join(node.config()))
        name = f"redis-{node.number}"
        node.proc = Proc(name, [self.redis_server, str(conf)], self.logs / f"{name}.log").start()
        self.procs.append(node.proc)
        return node.proc

    def _running(self) -> list[Proc]:
        return [node.proc for node in self.nodes if node.proc is not None]

    def _all_answer(self) -> bool:
        for node in self.nodes:
            with node.client() as client:
                client.ping()
        return True

    @staticmethod
    def _empty(node: RedisNode) -> bool:
        info = node.cluster_info()
        return info["cluster_known_nodes"] == "1" and info["cluster_slots_assigned"] == "0"

    def _create(self) -> None:
        """`redis-cli --cluster create`: the slots split in three, a replica for each master."""
        argv = [
            self.redis_cli,
            "--cluster",
            "create",
            *(node.addr for node in self.nodes),
            "--cluster-replicas",
            "1",
            "--cluster-yes",
        ]
        created = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        (self.logs / "redis-cluster-create.log").write_text(created.stdout + created.stderr)
        if created.returncode != 0 or "[OK] All 16384 slots covered" not in created.stdout:
            raise RuntimeError(
                f"redis-cli --cluster create failed (exit {created.returncode}):\n"
                f"{(created.stdout + created.stderr).strip()[-2000:]}"
            )

    def wait_ready(self, timeout: float = 60) -> None:
        """Until every node is up and says cluster_state:ok, each of the three masters has its
        replica online, and every node sees them so (three masters with slots, three replicas,
        none failing: gossip takes a moment to tell all nodes who replicates whom)."""
        wait_until(
            "Redis Cluster (cluster_state:ok, a replica online for each master; "
            f"folders {self.seed.home.parent}/redis-*, `make clean` drops a cluster made on other ports)",
            self._ready,
            timeout,
            self._running(),
        )

    def _ready(self) -> bool:
        if any(node.proc is None for node in self.nodes):
            return False
        masters = 0
        for node in self.nodes:
            if node.cluster_info()["cluster_state"] != "ok" or not _sees_whole(node.cluster_nodes()):
                return False
            replication = node.info("replication")
            if replication["role"] == "master":
                masters += 1
                if not any(
                    isinstance(value, dict) and value.get("state") == "online"
                    for key, value in replication.items()
                    if key.startswith("slave")
                ):
                    return False
            elif replication.get("master_link_status") != "up":
                return False
        return masters == SHARDS

    def masters(self) -> list[int]:
        """The ports of the running nodes that are masters now (each node's INFO replication;
        a node killed is not asked)."""
        return [
            node.port
            for node in self.nodes
            if node.proc is not None and node.info("replication")["role"] == "master"
        ]

    def kill(self, node: int, sig: signal.Signals = signal.SIGKILL) -> RedisNode:
        """Stop one node (number or port) with `sig` (SIGKILL: a crash); wait until it is gone."""
        found = self.node(node)
        proc = found.proc
        if proc is None:
            raise RuntimeError(f"Redis node {found.number} ({found.addr}) is not running")
        proc.signal(sig)
        if proc.wait(60) is None:
            proc.kill()
        proc.stop()  # reaps what is left of its group
        self.procs.remove(proc)
        found.proc = None
        return found

    def start_node(self, node: int, timeout: float = 60) -> RedisNode:
        """Start a killed node again on its ports and folder (its nodes.conf and AOF): it rejoins,
        as a replica when its replica took over meanwhile. Waits until the cluster is ready."""
        found = self.node(node)
        if found.proc is not None:
            raise RuntimeError(f"Redis node {found.number} ({found.addr}) is running already")
        self._start(found)
        self.wait_ready(timeout)
        return found

    def restart(self, sig: signal.Signals = signal.SIGKILL) -> Proc:
        """Every node stopped with `sig`, then started again on its folder; waits until ready.
        Returns the seed's process."""
        for node in self.nodes:
            if node.proc is not None:
                self.kill(node.number, sig)
        for node in self.nodes:
            self._start(node)
        self.wait_ready()
        return self._seed_proc()

    def forget(self) -> None:
        """The processes were stopped by their owner: no node is running."""
        for node in self.nodes:
            node.proc = None
