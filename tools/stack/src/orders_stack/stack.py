"""Kafka, Redis and the three services as local processes.

`Infra` is Kafka (KRaft, one node or a cluster of three, from the Maven Central jars:
`orders_stack.kafkanode`) and Redis (Debian's redis-server, AOF on; one server or a cluster of
six nodes: `orders_stack.rediscluster`); `orders_stack.services.Stack` adds the services on
top. Both are context managers that stop everything they started, in reverse order, whatever
happened in between.
"""

import asyncio
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .kafkanode import (
    CLUSTER_BROKER_CONFIG,
    KAFKA_LIBS,
    LOG4J2,
    cluster_id,
    ensure_kafka_jars,
    kafka_answers,
    read_cluster_id,
)
from .procs import Proc, wait_until
from .rediscluster import SHARDS, RedisNode, RedisNodes, node_ports

__all__ = ["KAFKA_LIBS", "ROOT", "Infra", "cluster_id", "free_port"]

ROOT = Path(__file__).resolve().parents[4]
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, never the same one twice in this process
    (two listeners of one Kafka on one port would not start)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def _require(binary: str, hint: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise RuntimeError(f"{binary} not found: {hint}")
    return path


def _port_free(port: int) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise RuntimeError(
                f"port {port} on 127.0.0.1 is taken: stop what uses it (`ss -ltnp 'sport = :{port}'`) "
                "or choose another port with the environment variable"
            ) from None


@dataclass
class Infra:
    """Kafka and Redis. Ports of 0 are picked free at start.

    `kafka_brokers=3`: a KRaft cluster of three nodes from the same jars, each controller and
    broker, one cluster id, a data directory (`kafka-<n>`) and ports of its own: node 1 on
    `kafka_port`, the others on `kafka_ports` (free ones when not given). Topics then want
    replication factor 3 and `min.insync.replicas` 2 (`kafka_env`), and so do the internal
    topics (`CLUSTER_BROKER_CONFIG`). One broker (the default) is the single node as it was;
    none (`kafka_brokers=0`): Redis alone, for tests of Redis.

    `redis_cluster=True`: a Redis Cluster of six nodes, three masters with a replica each
    (`orders_stack.rediscluster`), in folders `redis-1` to `redis-6`, on `redis_port` and the
    five ports after it (all free ones when it is 0). `redis_url` is the first node's, the seed
    a cluster client starts from; the services are told it is a cluster by `redis_env`."""

    data_dir: Path
    kafka_port: int = 9092
    redis_port: int = 6379
    kafka_heap: str = "512m"
    controller_port: int = 0
    procs: list[Proc] = field(default_factory=list)
    kafka_brokers: int = 1
    kafka_ports: list[int] = field(default_factory=list)
    """Ports of nodes 2..n (cluster mode); 0 or missing: a free one."""
    controller_ports: list[int] = field(default_factory=list)
    """Controller ports of nodes 1..n (cluster mode); 0 or missing: a free one."""
    kafkas: dict[int, Proc] = field(default_factory=dict)
    """The running Kafka nodes by node id."""
    kafka_cluster_id: str = ""
    """Every node's KRaft cluster id ("": the one on disk, else a new one)."""
    redis_cluster: bool = False
    _redis_nodes: RedisNodes | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kafka_brokers not in (0, 1, 3):
            raise ValueError(f"KAFKA_BROKERS is 1 or 3, not {self.kafka_brokers}")

    @property
    def broker_ports(self) -> list[int]:
        """The client port of each node, node 1 first (none with `kafka_brokers=0`)."""
        return [self.kafka_port, *self.kafka_ports][: self.kafka_brokers]

    @property
    def kafka_bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.broker_ports)

    @property
    def kafka_env(self) -> dict[str, str]:
        """What the services are told of this Kafka beyond its bootstrap list."""
        if self.kafka_brokers == 1:
            return {}
        return {"KAFKA_REPLICATION_FACTOR": "3", "KAFKA_MIN_INSYNC_REPLICAS": "2"}

    @property
    def redis_url(self) -> str:
        """The one Redis, or the cluster's first node (a cluster client's seed)."""
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def redis_env(self) -> dict[str, str]:
        """What the services are told of this Redis beyond its URL."""
        if not self.redis_cluster:
            return {}
        return {"REDIS_CLUSTER": "1", "REDIS_SHARDS": str(SHARDS), "REDIS_WAIT_REPLICAS": "1"}

    @property
    def redis_nodes(self) -> list[RedisNode]:
        """The cluster's six nodes (port, folder, process), node 1 (`redis_url`) first; none for
        the one Redis."""
        return self._redis_nodes.nodes if self._redis_nodes else []

    def _cluster(self) -> RedisNodes:
        if self._redis_nodes is None:
            raise RuntimeError("not a Redis Cluster: Infra(redis_cluster=True) starts one")
        return self._redis_nodes

    def kill_redis_node(self, node: int, sig: signal.Signals = signal.SIGKILL) -> RedisNode:
        """Stop cluster node `node` (its number, 1 to 6, or its port) with `sig`; wait until it is gone."""
        return self._cluster().kill(node, sig)

    def start_redis_node(self, node: int) -> RedisNode:
        """Start a killed cluster node again on its ports and folder; wait until the cluster is
        whole again (it rejoins as a replica when its replica took over)."""
        return self._cluster().start_node(node)

    def redis_masters(self) -> list[int]:
        """The ports of the cluster's running nodes that are masters now."""
        return self._cluster().masters()

    def start(self) -> "Infra":
        redis_server = _require(
            "redis-server", "install Debian's redis-server package (apt-get install redis-server)"
        )
        java, libs = "", KAFKA_LIBS
        if self.kafka_brokers:
            java = _require("java", "install a Java 17+ runtime (apt-get install openjdk-17-jre-headless)")
            libs = ensure_kafka_jars()
            self.kafka_port = self.kafka_port or free_port()
        if self.redis_cluster:
            ports = node_ports(self.redis_port, free_port)
            redis_cli = _require(
                "redis-cli", "install Debian's redis-tools package (apt-get install redis-tools)"
            )
            self._redis_nodes = RedisNodes.plan(self.data_dir, ports, redis_server, redis_cli, self.procs)
            redis_ports = [port for pair in ports for port in pair]
        else:
            redis_ports = [self.redis_port or free_port()]
        self.redis_port = redis_ports[0]
        if self.kafka_brokers > 1:
            extra = self.kafka_brokers - 1
            self.kafka_ports = [p or free_port() for p in [*self.kafka_ports, *[0] * extra][:extra]]
            n = self.kafka_brokers
            self.controller_ports = [p or free_port() for p in [*self.controller_ports, *[0] * n][:n]]
        for port in (*self.broker_ports, *redis_ports):
            _port_free(port)
        try:
            for node in range(1, self.kafka_brokers + 1):
                self._start_kafka(java, libs, node)
            if self._redis_nodes is not None:
                self.redis = self._redis_nodes.start()
            else:
                self.redis = self._start_redis(redis_server)
                wait_until("Redis", self._redis_answers, 30, [self.redis])
            if self.kafka_brokers:
                wait_until(
                    "Kafka",
                    lambda: asyncio.run(kafka_answers(self.kafka_bootstrap, self.kafka_brokers)),
                    120,
                    list(self.kafkas.values()),
                )
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def kafka(self) -> Proc:
        """The Kafka process (node 1 of a cluster)."""
        return self.kafkas[1]

    def _home(self, node: int) -> Path:
        return self.data_dir / ("kafka" if self.kafka_brokers == 1 else f"kafka-{node}")

    def _node_config(self, node: int, home: Path) -> list[str]:
        port = self.broker_ports[node - 1]
        if self.kafka_brokers == 1:
            # The controller keeps its port across restarts: the quorum's voters name it.
            controller = self.controller_port = self.controller_port or free_port()
            voters = f"1@127.0.0.1:{controller}"
            internal_rf = [
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=10",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
            ]
        else:
            controller = self.controller_ports[node - 1]
            voters = ",".join(f"{n}@127.0.0.1:{p}" for n, p in enumerate(self.controller_ports, 1))
            internal_rf = ["offsets.topic.num.partitions=10", *CLUSTER_BROKER_CONFIG]
        return [
            "process.roles=broker,controller",
            f"node.id={node}",
            f"controller.quorum.voters={voters}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={home / 'log'}",
            "num.partitions=6",
            # Keep every record: `make rebuild` reads the status topic from its start.
            "log.retention.ms=-1",
            "auto.create.topics.enable=false",
            *internal_rf,
            "group.initial.rebalance.delay.ms=0",
            "",
        ]

    def _cluster_id(self) -> str:
        """One id for every node: the one a node was formatted with already, else a new one."""
        if not self.kafka_cluster_id:
            homes = [self._home(n) for n in range(1, self.kafka_brokers + 1)]
            self.kafka_cluster_id = read_cluster_id(homes) or cluster_id()
        return self.kafka_cluster_id

    def _start_kafka(self, java: str, libs: Path, node: int = 1) -> Proc:
        home = self._home(node)
        home.mkdir(parents=True, exist_ok=True)
        props = home / "server.properties"
        props.write_text("\n".join(self._node_config(node, home)))
        (home / "log4j2.properties").write_text(LOG4J2)
        classpath = f"{libs}/*"
        if not (home / "log" / "meta.properties").exists():
            formatted = subprocess.run(
                [
                    java,
                    "-cp",
                    classpath,
                    f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    self._cluster_id(),
                    "-c",
                    str(props),
                ],
                capture_output=True,
                text=True,
            )
            if formatted.returncode != 0:
                raise RuntimeError(
                    f"Kafka's storage tool could not format {home / 'log'} "
                    f"(exit {formatted.returncode}): {formatted.stderr.strip() or formatted.stdout.strip()}"
                )
        name = "kafka" if self.kafka_brokers == 1 else f"kafka-{node}"
        proc = Proc(
            name,
            [
                java,
                f"-Xmx{self.kafka_heap}",
                f"-Xms{self.kafka_heap}",
                "-XX:+UseG1GC",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
                "-cp",
                classpath,
                "kafka.Kafka",
                str(props),
            ],
            self.data_dir / "logs" / f"{name}.log",
        ).start()
        self.procs.append(proc)
        self.kafkas[node] = proc
        return proc

    def kill_broker(self, node: int, sig: signal.Signals = signal.SIGKILL) -> None:
        """Stop Kafka node `node` with `sig` (SIGKILL: a crash) and wait until it is gone."""
        proc = self.kafkas.pop(node)
        proc.signal(sig)
        if proc.wait(60) is None:
            proc.kill()
        proc.stop()  # reaps what is left of its group
        self.procs.remove(proc)

    def start_broker(self, node: int) -> None:
        """Start Kafka node `node` again on its ports and data; wait until it answers and the
        cluster names every node again."""
        proc = self._start_kafka(_require("java", ""), ensure_kafka_jars(), node)
        own = f"127.0.0.1:{self.broker_ports[node - 1]}"
        wait_until(
            f"Kafka node {node}",
            lambda: asyncio.run(kafka_answers(own, self.kafka_brokers)),
            120,
            [proc],
        )

    def _start_redis(self, redis_server: str) -> Proc:
        home = self.data_dir / "redis"
        home.mkdir(parents=True, exist_ok=True)
        proc = Proc(
            "redis",
            [
                redis_server,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.redis_port),
                "--dir",
                str(home),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
            ],
            self.data_dir / "logs" / "redis.log",
        ).start()
        self.procs.append(proc)
        return proc

    def restart(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Stop Kafka or Redis with `sig` (SIGKILL: a crash), then start it again on the same
        port and data, and wait until it answers (a Redis Cluster: all six nodes, until it is ready)."""
        if name == "kafka":
            for node in sorted(self.kafkas):
                self.kill_broker(node, sig)
            for node in range(1, self.kafka_brokers + 1):
                self._start_kafka(_require("java", ""), ensure_kafka_jars(), node)
            wait_until(
                "Kafka",
                lambda: asyncio.run(kafka_answers(self.kafka_bootstrap, self.kafka_brokers)),
                120,
                list(self.kafkas.values()),
            )
        elif self._redis_nodes is not None:
            self.redis = self._redis_nodes.restart(sig)
        else:
            proc = self.redis
            proc.signal(sig)
            if proc.wait(60) is None:
                proc.kill()
            self.procs.remove(proc)
            self.redis = self._start_redis(_require("redis-server", ""))
            wait_until("Redis", self._redis_answers, 60, [self.redis])

    def _redis_answers(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    def stop(self) -> None:
        if len(self.kafkas) > 1:
            # All nodes at once: one by one, the last would wait for a quorum that has left.
            for proc in self.kafkas.values():
                proc.signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()
        self.kafkas.clear()
        if self._redis_nodes is not None:
            self._redis_nodes.forget()

    def __enter__(self) -> "Infra":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
