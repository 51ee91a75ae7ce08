"""LOG_FORMAT=json: one JSON object a line, with the service, the order id and the trace ids."""

import json
import logging

import pytest

from orders_runtime import logs, tracing
from orders_runtime.logs import ORDER_ID, JsonFormatter


def _record(message: str = "hello %s", args: tuple[object, ...] = ("world",)) -> logging.LogRecord:
    return logging.LogRecord("orders_processor.worker", logging.WARNING, __file__, 1, message, args, None)


def test_a_line_names_the_service_and_the_message() -> None:
    line = json.loads(JsonFormatter("processor").format(_record()))
    assert line["service"] == "processor"
    assert line["message"] == "hello world"
    assert line["level"] == "WARNING"
    assert line["logger"] == "orders_processor.worker"
    assert "orderId" not in line
    assert "traceId" not in line


def test_a_line_carries_the_order_and_the_span_of_the_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        tracing, "current_ids", lambda: ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    )
    token = ORDER_ID.set("0193a0b2-0000-7000-8000-000000000001")
    try:
        line = json.loads(JsonFormatter("api").format(_record()))
    finally:
        ORDER_ID.reset(token)
    assert line["orderId"] == "0193a0b2-0000-7000-8000-000000000001"
    assert line["traceId"] == "0af7651916cd43dd8448eb211c80319c"
    assert line["spanId"] == "b7ad6b7169203331"


def test_text_stays_the_default() -> None:
    config = logs.logging_config("info")
    assert config["formatters"]["default"] == {"format": logs.TEXT_FORMAT}
    assert (
        config["formatters"]["default"]
        != logs.logging_config("info", "json", "query")["formatters"]["default"]
    )


def test_tracing_off_costs_nothing_and_adds_no_headers() -> None:
    assert not tracing.ENABLED  # no OTLP endpoint in the test environment
    assert tracing.inject_headers([("content-type", b"x")]) == [("content-type", b"x")]
    assert (
        tracing.context_from_headers(
            [("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]
        )
        is None
    )
    with tracing.span("anything", "order") as span:
        assert span is None
