"""`python -m orders_stack`: the whole stack in the foreground until Ctrl-C."""

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from .stack import ROOT, Infra, Stack


def _port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data-dir", type=Path, default=ROOT / ".data" / "stack", help="where Kafka, Redis and logs live"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    infra = Infra(
        args.data_dir,
        kafka_port=_port("KAFKA_PORT", 9092),
        redis_port=_port("REDIS_PORT", 6379),
    )
    stack = Stack(
        infra,
        api_port=_port("API_PORT", 8000),
        query_port=_port("QUERY_PORT", 8001),
        processor_port=_port("PROCESSOR_PORT", 8002),
    )
    print("Starting Kafka and Redis (Kafka takes a few seconds)...", flush=True)
    try:
        with infra:
            print("Starting api, processor and query...", flush=True)
            with stack:
                print(
                    f"""
Order tracking is up. Ctrl-C stops everything.

  api (place orders)    {stack.api_url}/docs
  query (read orders)   {stack.query_url}/docs
  processor metrics     {stack.processor_url}/metrics
  Kafka                 {infra.kafka_bootstrap}
  Redis                 {infra.redis_url}
  logs                  {args.data_dir / "logs"}

Try:
  curl -si -X POST {stack.api_url}/api/orders -H 'Content-Type: application/json' \\
       -d '{{"userId":1,"productName":"Gaming Laptop","quantity":2,"price":1299.99}}'
""",
                    flush=True,
                )
                while not stop.wait(0.5):
                    for proc in [*infra.procs, *stack.procs.values()]:
                        proc.check_alive()
                print("\nStopping...", flush=True)
    except (RuntimeError, TimeoutError) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        sys.exit(1)
    print("Stopped; nothing left running.")


if __name__ == "__main__":
    main()
