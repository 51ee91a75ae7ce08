"""`python -m orders_processor.commands.dlq` (`make dlq ARGS=...`): list, filter and redrive dead letters.

    list     [filters]              every dead letter: where it is, why, where it came from, when
    redrive  [filters] [--dry-run]  send the chosen ones back to the orders topic

Filters: `--reason TEXT` (part of the reason), `--since` / `--until` (ISO 8601 times, of the
original record), `--order ID` (the order id, the record's key), `--at PARTITION:OFFSET` (one
dead letter, as `list` shows it; repeatable).

A redrive sends the record's value, key and own headers (its trace context among them) to the
orders topic, with the replay count (`dlq.replay-count`) one higher. A record already redriven
`DLQ_MAX_REPLAYS` times goes to the quarantine topic instead, so a record that can never be
processed does not loop. Redriving the same dead letters again changes nothing in the read
model: each transition is applied once (the processor replays idempotently).

A record that fails again after a redrive comes back as a new dead letter of the same chain
(the `dlq.origin` header): `redrive` sends only each chain's newest letter and none of a chain
already in quarantine, so running it again neither multiplies records nor fills the quarantine
with copies (`--again`: send every matching letter all the same).
"""

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from orders_kafka.clients import ensure_topics, new_producer, stop_bounded

from ..deadletter import DLQ_HEADERS, OFFSET, ORIGIN, PARTITION, REASON, REPLAY_COUNT, TIME, TOPIC, header
from ..settings import Settings, get_settings

__all__ = ["DeadLetter", "Filters", "main", "newest_of_chains", "read_dead_letters", "redrive"]

Record = ConsumerRecord[bytes, bytes]


@dataclass(frozen=True)
class DeadLetter:
    record: Record

    @property
    def at(self) -> str:
        """Where it is in the dead-letter topic: `partition:offset`."""
        return f"{self.record.partition}:{self.record.offset}"

    @property
    def order_id(self) -> str:
        return (self.record.key or b"").decode("utf-8", "replace")

    @property
    def reason(self) -> str:
        return header(self.record.headers, REASON) or ""

    @property
    def origin(self) -> str:
        h = self.record.headers
        return f"{header(h, TOPIC)}[{header(h, PARTITION)}]@{header(h, OFFSET)}"

    @property
    def chain(self) -> str:
        """The chain of dead letters this one belongs to: where its record was first
        dead-lettered from (its own origin for a letter written before `dlq.origin`)."""
        return header(self.record.headers, ORIGIN) or self.origin

    @property
    def time_ms(self) -> int:
        """The original record's time (the dead letter's own for one without the header)."""
        value = header(self.record.headers, TIME)
        return int(value) if value and value.lstrip("-").isdigit() else self.record.timestamp

    @property
    def replays(self) -> int:
        value = header(self.record.headers, REPLAY_COUNT)
        return int(value) if value and value.isdigit() else 0

    def line(self) -> str:
        when = datetime.fromtimestamp(self.time_ms / 1000, UTC).isoformat(timespec="milliseconds")
        return (
            f"{self.at:>10}  {when}  {self.order_id:36}  {self.origin}  replays={self.replays}  {self.reason}"
        )


@dataclass(frozen=True)
class Filters:
    reason: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    order_id: str | None = None
    at: frozenset[str] = frozenset()

    def match(self, letter: DeadLetter) -> bool:
        return (
            (self.reason is None or self.reason.lower() in letter.reason.lower())
            and (self.since_ms is None or letter.time_ms >= self.since_ms)
            and (self.until_ms is None or letter.time_ms <= self.until_ms)
            and (self.order_id is None or letter.order_id == self.order_id)
            and (not self.at or letter.at in self.at)
        )


async def read_dead_letters(
    settings: Settings, filters: Filters = Filters(), topic: str | None = None
) -> list[DeadLetter]:
    """Every dead letter now in the dead-letter topic (or `topic`: the quarantine), up to its
    end when asked, that `filters` match."""
    topic = topic or settings.kafka_dlq_topic
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    try:
        await consumer.start()
        partitions = await _partitions(settings, topic)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        found: list[DeadLetter] = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batches.items():
                found.extend(DeadLetter(r) for r in records if r.offset < ends[tp])
            remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
        return [letter for letter in found if filters.match(letter)]
    finally:
        await stop_bounded(consumer, "dead-letter reader stop")


async def _partitions(settings: Settings, topic: str) -> list[int]:
    """The topic's partitions ([] when it does not exist yet)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(p["partition"] for p in described.get("partitions") or [])


def newest_of_chains(
    letters: Sequence[DeadLetter], every: Sequence[DeadLetter], quarantined: Sequence[DeadLetter]
) -> list[DeadLetter]:
    """The `letters` a redrive sends: each the newest of its chain among `every` dead letter
    (the most replays, then the latest), and of no chain already in `quarantined`."""
    newest: dict[str, DeadLetter] = {}
    for letter in every:
        held = newest.get(letter.chain)
        key = (letter.replays, letter.record.timestamp, letter.record.partition, letter.record.offset)
        if held is None or key > (
            held.replays,
            held.record.timestamp,
            held.record.partition,
            held.record.offset,
        ):
            newest[letter.chain] = letter
    done = {letter.chain for letter in quarantined}
    return [
        letter
        for letter in letters
        if letter.chain in newest and newest[letter.chain].at == letter.at and letter.chain not in done
    ]


@dataclass(frozen=True)
class Redriven:
    letter: DeadLetter
    topic: str
    replays: int


async def redrive(settings: Settings, letters: Sequence[DeadLetter], dry_run: bool = False) -> list[Redriven]:
    """Send `letters` back to the orders topic (or, past `dlq_max_replays`, to quarantine)."""
    plan = []
    for letter in letters:
        replays = letter.replays + 1
        quarantined = replays > settings.dlq_max_replays
        plan.append(
            Redriven(
                letter,
                settings.kafka_quarantine_topic if quarantined else settings.kafka_orders_topic,
                replays,
            )
        )
    if dry_run or not plan:
        return plan
    await ensure_topics(settings)
    producer = new_producer(settings)
    await producer.start()
    try:
        deliveries = []
        for item in plan:
            record = item.letter.record
            own = [(k, v) for k, v in record.headers if k not in (*DLQ_HEADERS, REPLAY_COUNT)]
            # Quarantine keeps why and where from; the orders topic gets the record as it was.
            kept = (
                [(k, v) for k, v in record.headers if k in DLQ_HEADERS]
                if item.topic != settings.kafka_orders_topic
                else []
            )
            headers = [*kept, *own, (REPLAY_COUNT, str(item.replays).encode())]
            if header(record.headers, ORIGIN) is None:  # a letter from before dlq.origin: one chain
                headers.append((ORIGIN, item.letter.chain.encode()))
            deliveries.append(await producer.send(item.topic, record.value, key=record.key, headers=headers))
        await asyncio.gather(*deliveries)
    finally:
        await stop_bounded(producer, "redrive producer stop")
    return plan


def _time_ms(text: str) -> int:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="make dlq ARGS=...", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", nargs="?", choices=("list", "redrive"), default="list")
    parser.add_argument("--reason", help="only dead letters whose reason contains this text")
    parser.add_argument(
        "--since", type=_time_ms, help="only records from this time on (ISO 8601, UTC default)"
    )
    parser.add_argument("--until", type=_time_ms, help="only records up to this time")
    parser.add_argument("--order", help="only this order id")
    parser.add_argument("--at", action="append", default=[], help="PARTITION:OFFSET of one dead letter")
    parser.add_argument(
        "--dry-run", action="store_true", help="redrive: say what would be sent, send nothing"
    )
    parser.add_argument(
        "--again",
        action="store_true",
        help="redrive every matching letter, also those a newer letter of their chain or the "
        "quarantine supersedes",
    )
    return parser


async def run(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = settings or get_settings()
    filters = Filters(args.reason, args.since, args.until, args.order, frozenset(args.at))
    letters = await read_dead_letters(settings, filters)
    if args.command == "list":
        for letter in letters:
            print(letter.line())
        print(f"{len(letters)} dead letters in {settings.kafka_dlq_topic}")
        return 0
    if not args.again:
        every = await read_dead_letters(settings)
        quarantined = await read_dead_letters(settings, topic=settings.kafka_quarantine_topic)
        chosen = newest_of_chains(letters, every, quarantined)
        if len(chosen) < len(letters):
            print(
                f"{len(letters) - len(chosen)} of {len(letters)} matching dead letters left out: "
                "a newer letter of their chain, or the quarantine, has them (--again sends them too)"
            )
        letters = chosen
    done = await redrive(settings, letters, dry_run=args.dry_run)
    for item in done:
        verb = "would send" if args.dry_run else "sent"
        print(
            f"{item.letter.at:>10}  {item.letter.order_id:36}  {verb} to {item.topic} (replay {item.replays})"
        )
    to_orders = sum(1 for item in done if item.topic == settings.kafka_orders_topic)
    print(
        f"{'dry run: ' if args.dry_run else ''}{to_orders} redriven to {settings.kafka_orders_topic}, "
        f"{len(done) - to_orders} to {settings.kafka_quarantine_topic}"
    )
    return 0


def main() -> None:
    sys.exit(asyncio.run(run()))


if __name__ == "__main__":
    main()
