"""One order, one trace: the api's and the processor's spans in one tree, found in Jaeger by
the order id, through Jaeger's own query API (tools/stack: orders_stack.jaeger)."""

import asyncio
import json
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from orders_stack import Infra, Stack
from orders_stack.jaeger import JAEGER_BIN, Jaeger, find_trace, format_trace
from orders_stack.procs import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.redis]


@pytest.fixture(scope="module")
def traced_stack(
    infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, Jaeger, int]]:
    """The stack with tracing, and where its processor's lines start in the shared log file."""
    if not JAEGER_BIN.is_file():
        pytest.fail(f"{JAEGER_BIN} missing: `make jaeger` builds it (make test does)")
    unique = f"trace-{uuid.uuid4().hex[:12]}"
    data_dir: Path = tmp_path_factory.mktemp("jaeger")
    with Jaeger(data_dir, query_port=0, otlp_port=0, otlp_grpc_port=0) as jaeger:
        env = {
            "KAFKA_ORDERS_TOPIC": f"orders-{unique}",
            "KAFKA_DLQ_TOPIC": f"orders-{unique}.dlq",
            "KAFKA_CONSUMER_GROUP": f"processor-{unique}",
            "REDIS_KEY_PREFIX": f"{unique}:",
            "PROCESSING_DELAY_MS": "50",
            "BIND_HOST": "127.0.0.1",
            "TRACING_SAMPLE_RATIO": "1",
            "OTEL_BSP_SCHEDULE_DELAY": "200",  # export spans within 0.2 s, not 5 s
            "LOG_FORMAT": "json",
            **jaeger.otlp_env(),
        }
        log = infra.data_dir / "logs" / "processor.log"  # the session's stacks append to it
        start = log.stat().st_size if log.exists() else 0
        with Stack(infra, api_port=0, query_port=0, processor_port=0, env=env) as stack:
            yield stack, jaeger, start


def _completed(query_url: str, order_id: str) -> bool:
    answer = httpx.get(f"{query_url}/api/orders/{order_id}", timeout=5)
    return answer.status_code == 200 and answer.json()["data"]["status"] == "COMPLETED"


async def _watch(query_url: str, user_id: int, opened: asyncio.Event) -> None:
    """A live client of the user's feed, until it has seen a COMPLETED event."""
    async with (
        httpx.AsyncClient(timeout=30) as http,
        http.stream("GET", f"{query_url}/api/orders/events", params={"userId": user_id}) as answer,
    ):
        opened.set()
        async for line in answer.aiter_lines():
            if line == "event: COMPLETED":
                return


async def test_an_order_is_one_trace_across_api_processor_and_query(
    traced_stack: tuple[Stack, Jaeger, int],
) -> None:
    stack, jaeger, log_start = traced_stack
    user_id = 7000 + secrets.randbelow(1000)
    opened = asyncio.Event()
    watching = asyncio.create_task(_watch(stack.query_url, user_id, opened))
    await asyncio.wait_for(opened.wait(), 10)
    async with httpx.AsyncClient(timeout=10) as http:
        placed = await http.post(
            f"{stack.api_url}/api/orders",
            json={"userId": user_id, "productName": "Traced Lamp", "quantity": 1, "price": 9.5},
        )
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["data"]["orderId"]
    await asyncio.wait_for(watching, 30)
    await asyncio.to_thread(
        wait_until, "the order COMPLETED", lambda: _completed(stack.query_url, order_id), 30
    )

    def whole_trace() -> bool:
        """Every service's spans are in (each exports in batches, on its own schedule)."""
        found = find_trace(jaeger.query_url, order_id)
        if not found:
            return False
        names = {span["operationName"] for span in found["spans"]}
        processes = {pid: p["serviceName"] for pid, p in found["processes"].items()}
        exported = {processes[span["processID"]] for span in found["spans"]}
        return {"orders process", "order complete", "sse send"} <= names and {
            "api",
            "processor",
            "query",
        } <= exported

    await asyncio.to_thread(
        wait_until, "the api's, the processor's and the query's spans in Jaeger", whole_trace, 30
    )
    trace = find_trace(jaeger.query_url, order_id)
    assert trace is not None
    spans = {span["spanID"]: span for span in trace["spans"]}
    services = {pid: p["serviceName"] for pid, p in trace["processes"].items()}
    assert {"api", "processor", "query"} <= {services[s["processID"]] for s in spans.values()}
    for span in spans.values():  # every span names the order
        tags = {tag["key"]: tag["value"] for tag in span["tags"]}
        assert tags.get("order.id") == order_id, (span["operationName"], tags)

    def root_of(span: dict[str, object]) -> dict[str, object]:
        while True:
            refs = [r for r in span["references"] if r["refType"] == "CHILD_OF"]  # type: ignore[attr-defined]
            if not refs:
                return span
            span = spans[refs[0]["spanID"]]  # a missing parent fails here: not one tree

    completing = next(s for s in spans.values() if s["operationName"] == "order complete")
    root = root_of(completing)
    assert services[str(root["processID"])] == "api"
    tree = format_trace(trace)
    assert "processor: order complete" in tree, tree
    assert "api: orders publish" in tree, tree
    assert "query: sse send" in tree, tree

    # LOG_FORMAT=json: every line the processor wrote is a JSON object naming the service.
    with stack.procs["processor"].log_path.open("rb") as log:
        log.seek(log_start)
        lines = log.read().decode().splitlines()
    assert lines
    assert all(json.loads(line)["service"] == "processor" for line in lines)
