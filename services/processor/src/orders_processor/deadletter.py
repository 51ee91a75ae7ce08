"""Dead letters: the headers a dead-lettered record carries, named here once.

The handlers send a record that can never be processed to the dead-letter topic
(`KafkaDeadLetters`) with its value, key and headers unchanged (the trace context
among them) and these headers added; `python -m orders_processor.commands.dlq`
reads them to list, filter and redrive, and stamps `REPLAY_COUNT` on each redrive.
"""

from collections.abc import Iterable, Sequence

from aiokafka import AIOKafkaProducer, ConsumerRecord

from orders_contract.events import CONTENT_TYPE_HEADER
from orders_contract.settings import KafkaSettings
from orders_kafka.clients import new_producer, stop_bounded

__all__ = [
    "DLQ_HEADERS",
    "OFFSET",
    "ORIGIN",
    "PARTITION",
    "REASON",
    "REPLAY_COUNT",
    "TIME",
    "TOPIC",
    "KafkaDeadLetters",
    "dead_letter_headers",
    "header",
    "reason_class",
]

REASON = "dlq.reason"
TOPIC = "dlq.topic"
PARTITION = "dlq.partition"
OFFSET = "dlq.offset"
TIME = "dlq.time"
"""The original record's timestamp (ms since the epoch)."""
ORIGIN = "dlq.origin"
"""Where the record was first dead-lettered from (`topic[partition]@offset`): stamped once and
kept through every redrive, it names the chain of dead letters one record makes, so that a
redrive sends only each chain's newest letter."""
REPLAY_COUNT = "dlq.replay-count"
"""How many times the record was redriven to `orders`; past the limit it goes to quarantine."""
DLQ_HEADERS = (REASON, TOPIC, PARTITION, OFFSET, TIME)
"""What dead-lettering adds (a redrive takes them off again)."""

_REASON_CLASS_LENGTH = 40


def header(headers: Iterable[tuple[str, bytes]], name: str) -> str | None:
    """The last value of header `name`, as text (None if absent)."""
    found = None
    for key, value in headers:
        if key == name:
            found = value.decode("utf-8", "replace")
    return found


def dead_letter_headers(record: "ConsumerRecord[bytes, bytes]", reason: str) -> list[tuple[str, bytes]]:
    """The record's own headers (an earlier dead-lettering's taken off), where it came from, and
    the CloudEvents binding's `content-type` (which a record from another producer may lack)."""
    own: Sequence[tuple[str, bytes]] = [
        (k, v) for k, v in record.headers if k not in DLQ_HEADERS and k != CONTENT_TYPE_HEADER[0]
    ]
    if header(own, ORIGIN) is None:
        own = [*own, (ORIGIN, f"{record.topic}[{record.partition}]@{record.offset}".encode())]
    return [
        (REASON, reason.encode()),
        (TOPIC, record.topic.encode()),
        (PARTITION, str(record.partition).encode()),
        (OFFSET, str(record.offset).encode()),
        (TIME, str(record.timestamp).encode()),
        CONTENT_TYPE_HEADER,
        *own,
    ]


def reason_class(reason: str) -> str:
    """The kind of a reason, for a metric label: its text before the first colon, bounded
    (`invalid event`, `processing failed`, `impossible transition`, ...)."""
    return reason.split(":", 1)[0].strip()[:_REASON_CLASS_LENGTH] or "unknown"


class KafkaDeadLetters:
    """Dead letters sent to the dead-letter topic by an idempotent producer of their own."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Start the producer (the same one on each try)."""
        if self._producer is None:
            self._producer = new_producer(self._settings)
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await stop_bounded(self._producer, "dead-letter producer stop")

    async def send(self, record: "ConsumerRecord[bytes, bytes]", reason: str) -> None:
        """Returns once Kafka holds the dead letter."""
        if self._producer is None:
            raise RuntimeError("dead-letter producer not started")
        delivery = await self._producer.send(
            self._settings.kafka_dlq_topic,
            record.value,
            key=record.key,
            headers=dead_letter_headers(record, reason),
        )
        await delivery
