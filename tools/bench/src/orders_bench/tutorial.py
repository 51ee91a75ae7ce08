"""The tutorial's design, as a baseline: one consumer, one order at a time, a 200 ms delay each.

The ASP.NET tutorial this project succeeds runs a background consumer that
takes an order, marks it PROCESSING, waits 200 ms, marks it COMPLETED in an
in-memory list, then takes the next one: 5 orders a second at best.
`python -m orders_bench.tutorial BOOTSTRAP TOPIC SECONDS [DELAY_MS]` does
the same on aiokafka against a preloaded topic for a bounded time and prints
its completed orders per second as JSON.
"""

import asyncio
import json
import sys
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer

__all__ = ["run_tutorial"]


async def run_tutorial(bootstrap: str, topic: str, seconds: float, delay_ms: int = 200) -> dict[str, Any]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-tutorial-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
    )
    orders: dict[str, str] = {}  # the tutorial's in-memory list
    completed = 0
    first: float | None = None
    await asyncio.wait_for(consumer.start(), 30)
    try:
        deadline = time.perf_counter() + 30  # the group join and first fetch
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            try:
                record = await asyncio.wait_for(consumer.getone(), left)
            except TimeoutError:
                break
            if first is None:
                first = time.perf_counter()
                deadline = first + seconds
            order_id = json.loads(record.value or b"{}").get("subject", str(record.offset))
            orders[order_id] = "PROCESSING"
            await asyncio.sleep(delay_ms / 1000)
            orders[order_id] = "COMPLETED"
            completed += 1
    finally:
        await asyncio.wait_for(consumer.stop(), 10)
    elapsed = (time.perf_counter() - first) if first is not None else 0.0
    return {
        "delay_ms": delay_ms,
        "completed": completed,
        "seconds": round(elapsed, 3),
        "completed_per_s": round(completed / elapsed, 2) if elapsed else 0.0,
    }


def main() -> None:
    bootstrap, topic, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    delay_ms = int(sys.argv[4]) if len(sys.argv) > 4 else 200
    print(json.dumps(asyncio.run(run_tutorial(bootstrap, topic, seconds, delay_ms))))


if __name__ == "__main__":
    main()
