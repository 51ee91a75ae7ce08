"""`python -m orders_notifier`: KAFKA_BOOTSTRAP_SERVERS, KAFKA_STATUS_TOPIC, NOTIFIER_GROUP and
WEBHOOK_URL (optional: without it, it only logs) from the environment; Ctrl-C stops it."""

import asyncio
import contextlib
import logging
import os

from . import notify


def main() -> None:
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    env = os.environ.get
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            notify(
                env("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092"),
                env("KAFKA_STATUS_TOPIC", "orders.status"),
                env("NOTIFIER_GROUP", "orders-notifier"),
                env("WEBHOOK_URL"),
            )
        )


if __name__ == "__main__":
    main()
