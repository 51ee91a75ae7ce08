"""Jaeger (all-in-one, memory storage) as a local process, and reading an order's trace back.

The binary is built from the Go module proxy by `make jaeger` (infra/jaeger) into
.cache/bin; its configuration, infra/jaeger/all-in-one.yaml, binds every port to
127.0.0.1. The services send their spans over OTLP/HTTP (`otlp_env`); the
traces are read through Jaeger's JSON query API, by the order id tag every span
carries (`order.id`).
"""

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .procs import Proc, wait_until

__all__ = ["JAEGER_BIN", "Jaeger", "find_trace", "format_trace"]

_ROOT = Path(__file__).resolve().parents[4]
JAEGER_BIN = Path(os.environ.get("JAEGER_BIN", _ROOT / ".cache" / "bin" / "jaeger"))
CONFIG = _ROOT / "infra" / "jaeger" / "all-in-one.yaml"
ORDER_TAG = "order.id"  # orders_runtime.tracing.ORDER_ID (the stack does not import the services)
SERVICES = ("api", "processor", "query")


@dataclass
class Jaeger:
    """Jaeger on `query_port` (JSON API) and `otlp_port` (OTLP/HTTP in); 0 picks free ports."""

    data_dir: Path
    query_port: int = 16686
    otlp_port: int = 4318
    otlp_grpc_port: int = 4317
    procs: list[Proc] = field(default_factory=list)

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.query_port}"

    @property
    def otlp_url(self) -> str:
        return f"http://127.0.0.1:{self.otlp_port}"

    def otlp_env(self) -> dict[str, str]:
        """What the services need to send their spans here (standard OpenTelemetry variables)."""
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": self.otlp_url, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}

    def start(self) -> "Jaeger":
        from .stack import free_port

        if not JAEGER_BIN.is_file():
            raise RuntimeError(f"{JAEGER_BIN} not found: build it with `make jaeger`")
        self.query_port = self.query_port or free_port()
        self.otlp_port = self.otlp_port or free_port()
        self.otlp_grpc_port = self.otlp_grpc_port or free_port()
        env = {
            **os.environ,
            "JAEGER_QUERY_PORT": str(self.query_port),
            "JAEGER_QUERY_GRPC_PORT": str(free_port()),
            "JAEGER_OTLP_HTTP_PORT": str(self.otlp_port),
            "JAEGER_OTLP_GRPC_PORT": str(self.otlp_grpc_port),
            "JAEGER_HEALTH_PORT": str(free_port()),
            "OTEL_TRACES_EXPORTER": "none",  # Jaeger does not trace itself
            "OTEL_SDK_DISABLED": "true",
        }
        proc = Proc(
            "jaeger", [str(JAEGER_BIN), "--config", str(CONFIG)], self.data_dir / "logs" / "jaeger.log", env
        ).start()
        self.procs.append(proc)
        try:
            url = f"{self.query_url}/api/services"
            wait_until("Jaeger", lambda: httpx.get(url, timeout=2).status_code == 200, 30, [proc])
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop(10)  # it takes a few seconds to exit after SIGTERM
        self.procs.clear()

    def __enter__(self) -> "Jaeger":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def find_trace(query_url: str, order_id: str, timeout: float = 0) -> dict[str, Any] | None:
    """The trace whose spans carry `order.id` = `order_id` (all its spans, every service), or
    None; with `timeout`, keeps asking that long (spans are exported in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        found = _search(query_url, order_id)
        if found is not None or time.monotonic() >= deadline:
            return found
        time.sleep(0.5)


def _search(query_url: str, order_id: str) -> dict[str, Any] | None:
    tags = json.dumps({ORDER_TAG: order_id})
    for service in SERVICES:
        answer = httpx.get(
            f"{query_url}/api/traces",
            params={"service": service, "tags": tags, "limit": 20, "lookback": "2d"},
            timeout=10,
        )
        answer.raise_for_status()
        for hit in answer.json().get("data") or []:
            whole = httpx.get(f"{query_url}/api/traces/{hit['traceID']}", timeout=10)
            whole.raise_for_status()
            data = whole.json().get("data") or []
            if data:
                trace: dict[str, Any] = data[0]
                return trace
    return None


def format_trace(trace: dict[str, Any]) -> str:
    """The trace as an indented tree: each span's start (ms after the trace's), duration,
    service and name."""
    spans = {span["spanID"]: span for span in trace["spans"]}
    services = {pid: process["serviceName"] for pid, process in trace["processes"].items()}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in spans.values():
        parent = next(
            (ref["spanID"] for ref in span.get("references", []) if ref["refType"] == "CHILD_OF"), None
        )
        children.setdefault(parent if parent in spans else None, []).append(span)
    start = min(span["startTime"] for span in spans.values())
    lines = [f"trace {trace['traceID']}"]

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s["startTime"]):
            offset = (span["startTime"] - start) / 1000
            lines.append(
                f"{offset:9.1f} ms {span['duration'] / 1000:9.1f} ms  {'  ' * depth}"
                f"{services.get(span['processID'], '?')}: {span['operationName']}"
            )
            walk(span["spanID"], depth + 1)

    walk(None, 0)
    return "\n".join(lines)


def main() -> None:
    """`python -m orders_stack.jaeger ORDER_ID`: print the order's trace (`make trace ORDER=...`)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("order_id")
    parser.add_argument(
        "--jaeger", default=os.environ.get("JAEGER_URL", "http://127.0.0.1:16686"), help="Jaeger's query API"
    )
    args = parser.parse_args()
    try:
        trace = find_trace(args.jaeger, args.order_id)
    except httpx.HTTPError as exc:
        sys.exit(f"cannot ask Jaeger at {args.jaeger} ({exc!r}): is the stack up with TRACING=1?")
    if trace is None:
        sys.exit(f"no trace of order {args.order_id} in Jaeger at {args.jaeger}")
    print(format_trace(trace))


if __name__ == "__main__":
    main()
