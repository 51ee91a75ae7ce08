"""The example notifier against the real stack: a webhook hears of each final status once."""

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from orders_notifier import notify

from orders_stack import Infra, Stack, free_port

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A webhook on a free loopback port; the list fills with the JSON bodies POSTed to it."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


async def test_the_webhook_hears_of_completed_and_cancelled_orders(
    infra: Infra, test_env: dict[str, str], webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = webhook
    # The api alone first, so that the cancel surely finds its order still PLACED; then the
    # processor, which processes the other one and relays every transition.
    stack = Stack(
        infra, api_port=free_port(), query_port=free_port(), processor_port=free_port(), env=test_env
    )
    task: asyncio.Task[None] | None = None
    try:
        stack.start_service("api")
        stack.wait_ready("api")  # it has created the topics
        task = asyncio.create_task(
            notify(
                infra.kafka_bootstrap,
                test_env["KAFKA_STATUS_TOPIC"],
                "notifier-" + test_env["KAFKA_ORDERS_TOPIC"],
                url,
            )
        )
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as api:
            body = {"userId": 3, "productName": "Desk", "quantity": 1, "price": 120}
            kept = (await api.post("/api/orders", json=body)).json()["data"]["orderId"]
            dropped = (await api.post("/api/orders", json=body)).json()["data"]["orderId"]
            assert (await api.post(f"/api/orders/{dropped}/cancel")).status_code == 200
        stack.start_service("processor")
        async with asyncio.timeout(60):
            while len(received) < 2:
                await asyncio.sleep(0.1)
        await asyncio.sleep(1)  # nothing more comes
    finally:
        stack.stop()
        if task is not None:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert sorted((order["orderId"], order["status"]) for order in received) == sorted(
        [(kept, "COMPLETED"), (dropped, "CANCELLED")]
    )
    assert {order["version"] for order in received if order["orderId"] == kept} == {3}
