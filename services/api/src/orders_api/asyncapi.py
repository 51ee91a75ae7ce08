"""The event contract: an AsyncAPI 3.0 document of every topic, generated from the event models.

The payload schemas are the pydantic models' own JSON Schemas (as they serialize), so the
document cannot drift from the code; the api serves it at `GET /asyncapi.json`, and
tests/static checks it against the AsyncAPI specification's JSON Schema.
"""

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from orders_contract.events import (
    CONTENT_TYPE,
    EVENT_MODELS,
    POSITION_HEADER,
    OrderCancelledEvent,
    OrderPlacedEvent,
    OrderStatusChangedEvent,
)
from orders_contract.settings import KafkaSettings

__all__ = ["asyncapi_document"]

_KAFKA_BINDING = "0.5.0"
_REF = "#/components/schemas/{model}"


def _headers(**extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "content-type": {
                "const": CONTENT_TYPE,
                "description": "CloudEvents Kafka binding, structured mode: the value is the whole event.",
            },
            "traceparent": {
                "type": "string",
                "description": "W3C trace context (when traced): of the span that published the record; "
                "on a status record, of the span that made the transition.",
            },
            "tracestate": {"type": "string", "description": "W3C trace state, with `traceparent`."},
            **extra,
        },
        "required": ["content-type"],
    }


def _message(name: str, model: type[BaseModel], summary: str, headers: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "title": model.__name__,
        "summary": summary,
        "contentType": CONTENT_TYPE,
        "headers": headers,
        "payload": {"$ref": _REF.format(model=model.__name__)},
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": "The order id (`subject`)."},
                "bindingVersion": _KAFKA_BINDING,
            }
        },
    }


def _channel(address: str, description: str, messages: list[str], settings: KafkaSettings) -> dict[str, Any]:
    return {
        "address": address,
        "description": description,
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages},
        "bindings": {
            "kafka": {
                "topic": address,
                "partitions": settings.kafka_topic_partitions,
                "topicConfiguration": {"retention.ms": settings.kafka_topic_retention_ms},
                "bindingVersion": _KAFKA_BINDING,
            }
        },
    }


def _operation(action: str, channel: str, messages: list[str], summary: str) -> dict[str, Any]:
    return {
        "action": action,
        "summary": summary,
        "channel": {"$ref": f"#/channels/{channel}"},
        "messages": [{"$ref": f"#/channels/{channel}/messages/{name}"} for name in messages],
    }


def asyncapi_document(settings: KafkaSettings | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the topics named by `settings` (the defaults if None)."""
    settings = settings or KafkaSettings()
    _, definitions = models_json_schema(
        [(model, "serialization") for model in EVENT_MODELS], ref_template=_REF
    )
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Order tracking events",
            "version": "1.0.0",
            "description": "The Kafka topics of the order tracking services. Every record is a "
            "CloudEvents 1.0 JSON event in the Kafka binding's structured mode; `dataschema` "
            "names the version of its `data`.",
        },
        "defaultContentType": CONTENT_TYPE,
        "channels": _channels(settings),
        "operations": _operations(),
        "components": {"schemas": definitions["$defs"], "messages": _messages()},
    }


def _channels(settings: KafkaSettings) -> dict[str, Any]:
    """Every topic we produce or consume, by the name the operations use."""
    return {
        "orders": _channel(
            settings.kafka_orders_topic,
            "Orders the api accepted, and its cancellations; key: the order id.",
            ["OrderPlaced", "OrderCancelled"],
            settings,
        ),
        "orderStatus": _channel(
            settings.kafka_status_topic,
            "One event per status transition, with the order after it, exactly once and in "
            "order per order for read_committed consumers; key: the order id.",
            ["OrderStatusChanged"],
            settings,
        ),
        "deadLetters": _channel(
            settings.kafka_dlq_topic,
            "Records of the orders topic that can never be processed: the original key, "
            "value and headers, and the reason in headers.",
            ["DeadLetter"],
            settings,
        ),
        "quarantine": _channel(
            settings.kafka_quarantine_topic,
            "Dead letters redriven more than `DLQ_MAX_REPLAYS` times: kept with their "
            "dead-letter headers, never redriven again.",
            ["DeadLetter"],
            settings,
        ),
    }


def _operations() -> dict[str, Any]:
    """Who sends and who receives on each channel."""
    return {
        "placeOrders": _operation(
            "send", "orders", ["OrderPlaced", "OrderCancelled"], "The api publishes accepted orders."
        ),
        "processOrders": _operation(
            "receive", "orders", ["OrderPlaced", "OrderCancelled"], "The processor drives each order."
        ),
        "publishStatus": _operation(
            "send", "orderStatus", ["OrderStatusChanged"], "The processor's relay publishes transitions."
        ),
        "receiveStatus": _operation(
            "receive", "orderStatus", ["OrderStatusChanged"], "Other services react to transitions."
        ),
        "deadLetter": _operation(
            "send", "deadLetters", ["DeadLetter"], "The processor sets aside what it cannot process."
        ),
        "readDeadLetters": _operation(
            "receive", "deadLetters", ["DeadLetter"], "`make dlq` lists, filters and redrives them."
        ),
        "quarantine": _operation(
            "send", "quarantine", ["DeadLetter"], "`make dlq` sets aside what was redriven too often."
        ),
    }


def _messages() -> dict[str, Any]:
    """The messages, each with the Kafka headers it carries."""
    redriven = {  # on a dead letter, and on an orders record `make dlq` redrove
        "dlq.origin": {
            "type": "string",
            "description": "Where the record was first dead-lettered from (`topic[partition]@offset`): "
            "the chain its later dead letters belong to.",
        },
        "dlq.replay-count": {
            "type": "string",
            "description": "How many times it was redriven (`make dlq`), absent before the first.",
        },
    }
    cloudevent = _headers(**redriven)
    dead = _headers(
        **{
            "dlq.reason": {"type": "string", "description": "Why the record can never be processed."},
            "dlq.topic": {"type": "string", "description": "The topic it was read from."},
            "dlq.partition": {"type": "string", "description": "Its partition there (decimal)."},
            "dlq.offset": {"type": "string", "description": "Its offset there (decimal)."},
            "dlq.time": {"type": "string", "description": "The original record's time (ms since the epoch)."},
            **redriven,
        }
    )
    status = _headers(
        **{
            POSITION_HEADER: {
                "type": "string",
                "description": "The update-stream entry it was published from.",
            }
        }
    )
    return {
        "OrderPlaced": _message("order.placed", OrderPlacedEvent, "An order was accepted.", cloudevent),
        "OrderCancelled": _message(
            "order.cancelled", OrderCancelledEvent, "A PLACED order was cancelled.", cloudevent
        ),
        "OrderStatusChanged": _message(
            "order.status.changed", OrderStatusChangedEvent, "An order changed status.", status
        ),
        "DeadLetter": {
            "name": "dead-letter",
            "summary": "A record of the orders topic, unchanged (it may not be JSON at all).",
            "headers": dead,
            "payload": {"description": "The original record's value, byte for byte."},
        },
    }
