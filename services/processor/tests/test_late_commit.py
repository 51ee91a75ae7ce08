"""A commit that outlives its wait (Kafka paused) must not leave 'Task exception was never
retrieved' behind: aiokafka shields the commit request in a task of its own."""

import asyncio
import gc
import logging
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, UnknownMemberIdError
from redis.asyncio import Redis

from orders_contract.keys import Keys
from orders_processor import consumer as consumer_module
from orders_processor.metrics import current_value
from orders_processor.offsets import PartitionOffsets
from orders_processor.settings import Settings
from orders_processor.worker import Worker
from orders_readmodel.store import OrderStore


class PausedKafka:
    """commit() as aiokafka's coordinator does it: the request shielded in a task of its own,
    answered (UnknownMemberIdError: the group dropped us meanwhile) only after `pause`."""

    def __init__(self, pause: float) -> None:
        self.pause = pause

    async def _request(self) -> None:
        await asyncio.sleep(self.pause)
        raise UnknownMemberIdError()

    async def commit(self, offsets: Any) -> None:
        try:
            await asyncio.shield(self._request())
        except UnknownMemberIdError as exc:
            raise CommitFailedError("group rebalanced") from exc


async def test_a_commit_that_outlives_its_wait_leaves_no_unretrieved_exception(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    gc.collect()  # what earlier tests left behind is reported before this test listens
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    unretrieved: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda loop, context: unretrieved.append(context))
    monkeypatch.setattr(consumer_module, "_COMMIT_TIMEOUT", 0.05)
    consumer = Worker(Settings(processor_commit_lag_ms=0), OrderStore(Redis(), Keys("test:late:"))).consumer
    consumer._consumer = PausedKafka(0.2)  # type: ignore[assignment]
    tracker = PartitionOffsets()
    tracker.started(0)
    tracker.finished(0, at=0.0)
    consumer._offsets[TopicPartition("orders", 0)] = tracker
    try:
        with caplog.at_level(logging.INFO):
            await consumer._commit()
            assert current_value(consumer.metrics.commit_failures) == 1
            await consumer._commit()  # skipped while the first is still out
            assert current_value(consumer.metrics.commit_failures) == 2
            await asyncio.sleep(0.4)
            gc.collect()
            await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    ours = (UnknownMemberIdError, CommitFailedError)
    assert [c for c in unretrieved if isinstance(c.get("exception"), ours)] == []
    assert "outlived its wait failed" in caplog.text
