"""Kafka, Redis and the three services as local processes.

`Infra` is Kafka (KRaft, one node, from the Maven Central jars) and Redis
(Debian's redis-server, AOF on); `Stack` adds the api, processor and query on
top, and the front door (nginx, `gateway_port`) when asked. Both are context
managers that stop everything they started, in reverse order, whatever
happened in between.
"""

import asyncio
import base64
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

from .gateway import Gateway, find_nginx
from .procs import Proc, wait_until

__all__ = ["Infra", "Stack", "cluster_id", "free_port"]

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[4]
KAFKA_LIBS = Path(os.environ.get("KAFKA_LIBS", ROOT / ".cache" / "kafka" / "libs"))
KAFKA_POM = ROOT / "infra" / "kafka" / "pom.xml"

LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.console.ref = console
logger.kafka.name = kafka.server.KafkaServer
logger.kafka.level = info
logger.raft.name = kafka.server.KafkaRaftServer
logger.raft.level = info
"""


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


def cluster_id() -> str:
    """A random KRaft cluster id: a UUID in URL-safe base64, as Kafka writes them.

    Like Kafka's own `Uuid.randomUuid`, never one starting with "-": the storage
    tool would read it as an option and refuse to format."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def ensure_kafka_jars() -> Path:
    """Apache Kafka's jars, fetched once from Maven Central into the cache folder."""
    if not any(KAFKA_LIBS.glob("kafka_2.13-*.jar")):
        if shutil.which("mvn") is None:
            raise RuntimeError("Maven (mvn) is needed once to fetch Kafka's jars: apt-get install maven")
        log.info("fetching Kafka's jars from Maven Central into %s with Maven (once, about 30 s)", KAFKA_LIBS)
        subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(KAFKA_POM),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={KAFKA_LIBS}",
                "-DincludeScope=runtime",
            ],
            check=True,
        )
    return KAFKA_LIBS


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


async def _kafka_answers(bootstrap: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await asyncio.wait_for(admin.start(), 3)
        await asyncio.wait_for(admin.describe_cluster(), 3)
        return True
    finally:
        await admin.close()


@dataclass
class Infra:
    """Kafka and Redis. Ports of 0 are picked free at start."""

    data_dir: Path
    kafka_port: int = 9092
    redis_port: int = 6379
    kafka_heap: str = "512m"
    controller_port: int = 0
    procs: list[Proc] = field(default_factory=list)

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def start(self) -> "Infra":
        java = _require("java", "install a Java 17+ runtime (apt-get install openjdk-17-jre-headless)")
        redis_server = _require(
            "redis-server", "install Debian's redis-server package (apt-get install redis-server)"
        )
        libs = ensure_kafka_jars()
        self.kafka_port = self.kafka_port or free_port()
        self.redis_port = self.redis_port or free_port()
        for port in (self.kafka_port, self.redis_port):
            _port_free(port)
        try:
            self.kafka = self._start_kafka(java, libs)
            self.redis = self._start_redis(redis_server)
            wait_until("Redis", self._redis_answers, 30, [self.redis])
            wait_until(
                "Kafka",
                lambda: asyncio.run(_kafka_answers(self.kafka_bootstrap)),
                120,
                [self.kafka],
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _start_kafka(self, java: str, libs: Path) -> Proc:
        home = self.data_dir / "kafka"
        home.mkdir(parents=True, exist_ok=True)
        # The controller keeps its port across restarts: the quorum's voters name it.
        controller = self.controller_port = self.controller_port or free_port()
        props = home / "server.properties"
        props.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{controller}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.kafka_port},CONTROLLER://127.0.0.1:{controller}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.kafka_port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    f"log.dirs={home / 'log'}",
                    "num.partitions=6",
                    # Keep every record: `make rebuild` reads the status topic from its start.
                    "log.retention.ms=-1",
                    "auto.create.topics.enable=false",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=10",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "",
                ]
            )
        )
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
                    cluster_id(),
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
        proc = Proc(
            "kafka",
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
            self.data_dir / "logs" / "kafka.log",
        ).start()
        self.procs.append(proc)
        return proc

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
        port and data, and wait until it answers."""
        proc = self.kafka if name == "kafka" else self.redis
        proc.signal(sig)
        if proc.wait(60) is None:
            proc.kill()
        self.procs.remove(proc)
        if name == "kafka":
            self.kafka = self._start_kafka(_require("java", ""), ensure_kafka_jars())
            wait_until("Kafka", lambda: asyncio.run(_kafka_answers(self.kafka_bootstrap)), 120, [self.kafka])
        else:
            self.redis = self._start_redis(_require("redis-server", ""))
            wait_until("Redis", self._redis_answers, 60, [self.redis])

    def _redis_answers(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()

    def __enter__(self) -> "Infra":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


SERVICES = ("api", "processor", "query")


@dataclass
class Stack:
    """The three services on top of an `Infra`, with a key prefix, topic and group of their own.

    `gateway_port`: also the front door (nginx) on that port (0: a free one; None: none); the
    `Location` headers and the dashboard's order form then name the gateway's URL."""

    infra: Infra
    api_port: int = 8000
    query_port: int = 8001
    processor_port: int = 8002
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)
    gateway_port: int | None = None
    gateway: Gateway | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.query_port}"

    @property
    def processor_url(self) -> str:
        return f"http://127.0.0.1:{self.processor_port}"

    @property
    def gateway_url(self) -> str | None:
        """The front door's URL, None when the stack runs without it."""
        return None if self.gateway_port is None else f"http://127.0.0.1:{self.gateway_port}"

    def service_env(self) -> dict[str, str]:
        """The environment passes through, but Kafka, Redis and the ports are the ones started here."""
        front = self.gateway_url
        # The dashboard (served by query) places orders on the api from the browser, through the
        # gateway when there is one (same origin there; cross-origin from the query port).
        origins = [self.query_url, f"http://localhost:{self.query_port}"]
        if front:
            origins += [front, f"http://localhost:{self.gateway_port}"]
        return {
            "BIND_HOST": "127.0.0.1",
            # Location headers and the dashboard's form: the front door when it runs.
            "QUERY_PUBLIC_URL": front or self.query_url,
            "API_PUBLIC_URL": front or self.api_url,
            "CORS_ORIGINS": ",".join(origins),
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.infra.kafka_bootstrap,
            "REDIS_URL": self.infra.redis_url,
            "API_PORT": str(self.api_port),
            "QUERY_PORT": str(self.query_port),
            "PROCESSOR_PORT": str(self.processor_port),
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }

    def start(self) -> "Stack":
        self.api_port = self.api_port or free_port()
        self.query_port = self.query_port or free_port()
        self.processor_port = self.processor_port or free_port()
        if self.gateway_port is not None:
            find_nginx()  # before anything starts: a missing nginx is said at once
            self.gateway_port = self.gateway_port or free_port()
        ports = [self.api_port, self.query_port, self.processor_port]
        for port in [*ports, *([self.gateway_port] if self.gateway_port else [])]:
            _port_free(port)
        try:
            for name in SERVICES:
                self.start_service(name)
            for name in SERVICES:
                self.wait_ready(name)
            if self.gateway_port is not None:
                self.gateway = Gateway(
                    self.infra.data_dir,
                    api_port=self.api_port,
                    query_port=self.query_port,
                    port=self.gateway_port,
                    bind_host=self.service_env()["BIND_HOST"],
                ).start()
        except BaseException:
            self.stop()
            raise
        return self

    def start_service(self, name: str, key: str | None = None, **env: str) -> Proc:
        """Start one service process (`key` names a second processor, say)."""
        key = key or name
        proc = Proc(
            key,
            [sys.executable, "-m", f"orders_{name}"],
            self.infra.data_dir / "logs" / f"{key}.log",
            env={**self.service_env(), **env},
        ).start()
        self.procs[key] = proc
        return proc

    def restart(self, key: str, sig: signal.Signals = signal.SIGKILL) -> Proc:
        """Stop one service process with `sig` (SIGKILL: a crash) and start it again as it was."""
        old = self.procs[key]
        old.signal(sig)
        if old.wait(60) is None:
            old.kill()
        old.stop()  # reaps what is left of its group
        self.procs[key] = proc = Proc(key, old.argv, old.log_path, env=old.env).start()
        return proc

    def wait_ready(self, key: str, timeout: float = 60) -> None:
        proc = self.procs[key]
        service = key.split("-")[0]  # "processor-2" is a processor
        url = f"http://127.0.0.1:{proc.env[service.upper() + '_PORT']}/health/ready"
        wait_until(key, lambda: httpx.get(url, timeout=2).status_code == 200, timeout, [proc])

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None
        for proc in reversed(list(self.procs.values())):
            proc.stop()
        self.procs.clear()

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
