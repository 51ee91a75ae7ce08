"""`python -m orders_stack`: the whole stack in the foreground until Ctrl-C."""

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path

from .stack import ROOT, Infra, Stack


def _port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _interrupt(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM, at any moment (starting up included): leaving the `with`
    blocks stops every process started so far. A second Ctrl-C does not cut that short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("\nStopping...", flush=True)
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data-dir", type=Path, default=ROOT / ".data" / "stack", help="where Kafka, Redis and logs live"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("aiokafka", "httpx"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)

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
  event contract        {stack.api_url}/asyncapi.json  (status events on Kafka topic orders.status)
  query (read orders)   {stack.query_url}/docs
  live dashboard        {stack.query_url}/dashboard
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
                while True:
                    time.sleep(0.5)
                    for proc in [*infra.procs, *stack.procs.values()]:
                        proc.check_alive()
    except KeyboardInterrupt:
        print("Stopped; nothing left running.")
    except (RuntimeError, TimeoutError) as exc:
        print(f"\nerror: {exc}\nEverything started was stopped.", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
