"""Log lines: text for people (the default) or JSON objects for machines (`LOG_FORMAT=json`).

A JSON line carries the time, level, logger, message, the service, the order id
when the code logging works on one (`ORDER_ID`, a context variable the api and
the processor set per order), and the trace and span ids when a span is current.
"""

import logging
import logging.config
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

from orders_runtime import tracing

__all__ = ["ORDER_ID", "JsonFormatter", "configure_logging", "logging_config"]

ORDER_ID: ContextVar[str | None] = ContextVar("order_id", default=None)
"""The order the current task works on, for log lines (set it with `ORDER_ID.set(...)`)."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object a line; `service` names the service in every line."""

    def __init__(self, service: str = "") -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        order_id = getattr(record, "order_id", None) or ORDER_ID.get()
        if order_id:
            line["orderId"] = order_id
        if (ids := tracing.current_ids()) is not None:
            line["traceId"], line["spanId"] = ids
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def logging_config(level: str, fmt: str = "text", service: str = "") -> dict[str, Any]:
    """A `logging.config.dictConfig` of the root logger (uvicorn's loggers pass through it)."""
    formatter: dict[str, Any] = (
        {"()": JsonFormatter, "service": service} if fmt == "json" else {"format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default"}},
        "root": {"level": level.upper(), "handlers": ["default"]},
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def configure_logging(level: str, fmt: str = "text", service: str = "") -> None:
    logging.config.dictConfig(logging_config(level, fmt, service))
