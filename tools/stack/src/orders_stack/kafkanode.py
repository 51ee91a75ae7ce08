"""What a local Kafka node needs: Apache Kafka's jars (fetched once from Maven Central), its
log4j2 settings, a KRaft cluster id, the three-node cluster's broker settings, and the probe
that says it answers. `orders_stack.stack.Infra` starts the nodes."""

import asyncio
import base64
import logging
import os
import shutil
import subprocess
import uuid
from pathlib import Path

__all__ = [
    "CLUSTER_BROKER_CONFIG",
    "KAFKA_LIBS",
    "KAFKA_POM",
    "LOG4J2",
    "cluster_id",
    "ensure_kafka_jars",
    "kafka_answers",
    "read_cluster_id",
]

log = logging.getLogger(__name__)

_ROOT = Path(__file__).resolve().parents[4]
KAFKA_LIBS = Path(os.environ.get("KAFKA_LIBS", _ROOT / ".cache" / "kafka" / "libs"))
KAFKA_POM = _ROOT / "infra" / "kafka" / "pom.xml"

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


async def kafka_answers(bootstrap: str, brokers: int = 1) -> bool:
    """Kafka answers a metadata request at `bootstrap`, naming at least `brokers` brokers."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await asyncio.wait_for(admin.start(), 3)
        cluster = await asyncio.wait_for(admin.describe_cluster(), 3)
        return len(cluster["brokers"]) >= brokers
    finally:
        await admin.close()


CLUSTER_BROKER_CONFIG = [
    # Every internal topic on all three nodes, two of them in sync for a write.
    "default.replication.factor=3",
    "min.insync.replicas=2",
    "offsets.topic.replication.factor=3",
    "transaction.state.log.replication.factor=3",
    "transaction.state.log.min.isr=2",
    "share.coordinator.state.topic.replication.factor=3",
    "share.coordinator.state.topic.min.isr=2",
    # A replica that was not in sync never becomes leader: it could lack acknowledged records.
    "unclean.leader.election.enable=false",
    # A dead broker is fenced (its partitions get new leaders) after 2.5 s, not 9 s, and a dead
    # active controller is replaced after about 1.5 s, not 3 s: leader loss fits inside the
    # api's send timeout (5 s) even when the leader was also the controller.
    "broker.session.timeout.ms=2500",
    "broker.heartbeat.interval.ms=500",
    "controller.quorum.fetch.timeout.ms=1000",
    "controller.quorum.election.timeout.ms=500",
]
"""The broker settings of the three-node cluster beyond the single node's."""


def read_cluster_id(homes: list[Path]) -> str | None:
    """The cluster id a node's formatted log directory already holds, if one does."""
    for home in homes:
        meta = home / "log" / "meta.properties"
        if meta.exists():
            for line in meta.read_text().splitlines():
                if line.startswith("cluster.id="):
                    return line.split("=", 1)[1].strip()
    return None
