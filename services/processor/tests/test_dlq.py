"""`python -m orders_processor.commands.dlq` on real Kafka: listing and filtering dead letters, redriving
them (dry run first) with a replay count, and quarantine past the limit."""

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord

from orders_kafka.clients import ensure_topics
from orders_processor.commands.dlq import (
    DeadLetter,
    Filters,
    newest_of_chains,
    read_dead_letters,
    redrive,
    run,
)
from orders_processor.deadletter import OFFSET, ORIGIN, PARTITION, REASON, REPLAY_COUNT, TIME, TOPIC
from orders_processor.settings import Settings
from orders_stack.ledger import read_records

pytestmark = [pytest.mark.kafka]


@pytest.fixture
async def settings(test_env: dict[str, str]) -> Settings:
    s = Settings(
        kafka_bootstrap_servers=test_env["KAFKA_BOOTSTRAP_SERVERS"],
        kafka_orders_topic=test_env["KAFKA_ORDERS_TOPIC"],
        kafka_dlq_topic=test_env["KAFKA_DLQ_TOPIC"],
        kafka_quarantine_topic=test_env["KAFKA_ORDERS_TOPIC"] + ".quarantine",
        kafka_topic_partitions=2,
        dlq_max_replays=2,
    )
    await ensure_topics(s)
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        for n, (reason, replays) in enumerate(
            [("invalid event: x", 0), ("processing failed: y", 0), ("invalid event: z", 2)]
        ):
            headers = [
                (REASON, reason.encode()),
                (TOPIC, s.kafka_orders_topic.encode()),
                (PARTITION, b"0"),
                (OFFSET, str(n).encode()),
                (TIME, str(1_700_000_000_000 + n * 60_000).encode()),
                ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            ]
            if replays:
                headers.append((REPLAY_COUNT, str(replays).encode()))
            await producer.send_and_wait(
                s.kafka_dlq_topic,
                f"value-{n}".encode(),
                key=f"order-{n}".encode(),
                headers=headers,
                partition=0,
            )
    finally:
        await producer.stop()
    return s


async def test_list_and_filter(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    letters = await read_dead_letters(settings)
    assert [d.order_id for d in letters] == ["order-0", "order-1", "order-2"]
    assert letters[1].reason == "processing failed: y"
    assert letters[0].origin == f"{settings.kafka_orders_topic}[0]@0"
    assert [d.order_id for d in await read_dead_letters(settings, Filters(reason="invalid"))] == [
        "order-0",
        "order-2",
    ]
    assert [d.order_id for d in await read_dead_letters(settings, Filters(order_id="order-1"))] == ["order-1"]
    window = Filters(since_ms=1_700_000_000_000 + 30_000, until_ms=1_700_000_000_000 + 90_000)
    assert [d.order_id for d in await read_dead_letters(settings, window)] == ["order-1"]
    assert await run(["list", "--reason", "processing"], settings) == 0
    out = capsys.readouterr().out
    assert "order-1" in out
    assert "order-0" not in out


async def test_redrive_stamps_a_replay_count_and_quarantines_past_the_limit(settings: Settings) -> None:
    letters = await read_dead_letters(settings)
    planned = await redrive(settings, letters, dry_run=True)
    assert [(p.topic, p.replays) for p in planned] == [
        (settings.kafka_orders_topic, 1),
        (settings.kafka_orders_topic, 1),
        (settings.kafka_quarantine_topic, 3),
    ]
    await redrive(settings, letters)
    back = await read_records(settings.kafka_bootstrap_servers, settings.kafka_orders_topic, 2)
    assert sorted(r.value or b"" for r in back) == [b"value-0", b"value-1"]
    for record in back:
        headers = dict(record.headers)
        assert headers[REPLAY_COUNT] == b"1"
        assert REASON not in headers  # the orders topic gets the record as it was
        assert headers["traceparent"].startswith(b"00-0af7")
    (held,) = await read_records(settings.kafka_bootstrap_servers, settings.kafka_quarantine_topic, 1)
    assert held.value == b"value-2"
    assert dict(held.headers)[REPLAY_COUNT] == b"3"
    assert dict(held.headers)[REASON] == b"invalid event: z"


async def test_a_second_redrive_adds_no_copy_to_the_quarantine(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run(["redrive"], settings) == 0
    assert await run(["redrive"], settings) == 0
    assert "1 of 3 matching dead letters left out" in capsys.readouterr().out
    held = await read_dead_letters(settings, topic=settings.kafka_quarantine_topic)
    assert [d.order_id for d in held] == ["order-2"]


def _letter(offset: int, replays: int, origin: str | None) -> DeadLetter:
    headers = [(REPLAY_COUNT, str(replays).encode())] + ([(ORIGIN, origin.encode())] if origin else [])
    return DeadLetter(
        ConsumerRecord(
            "orders.dlq", 0, offset, 1_700_000_000_000 + offset, 0, b"order", b"v", None, 5, 1, headers
        )
    )


def test_a_redrive_sends_only_the_newest_letter_of_each_chain() -> None:
    first = _letter(0, 0, None)  # written before dlq.origin: its own origin names the chain
    again = _letter(1, 1, first.origin)  # the same record, failed again after a redrive
    other = _letter(2, 0, "orders[1]@7")
    held = _letter(0, 3, "orders[1]@7")  # that chain went to quarantine
    every = [first, again, other]
    assert newest_of_chains(every, every, []) == [again, other]
    assert newest_of_chains(every, every, [held]) == [again]
    assert newest_of_chains([first], every, []) == []
