"""What tracing costs: the same load with tracing off, at 10% and at 100% sampling, in one run.

The api and the processor are restarted for each setting, sending their spans to a Jaeger
started here (the one `make jaeger` builds); off is `TRACING_SAMPLE_RATIO=0` with the same
endpoint set, so only the sampling differs. Each row is a load step as the curves have
(achieved rate, ingest and end-to-end latency), under `curves` as `tracing off`,
`tracing 10%`, `tracing 100%`.
"""

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from orders_stack import Stack
from orders_stack.jaeger import JAEGER_BIN, Jaeger

__all__ = ["SETTINGS", "tracing_rows"]

SETTINGS = (("tracing off", "0"), ("tracing 10%", "0.1"), ("tracing 100%", "1.0"))


@contextlib.contextmanager
def _restarted(stack: Stack, env: dict[str, str]) -> Iterator[None]:
    """api and processor restarted with `env`; at the end the stack's environment is as it was
    (the bench's next phase restarts both anyway: they are not restarted again here)."""

    def restart(with_env: dict[str, str]) -> None:
        for key in ("processor", "api"):
            stack.procs.pop(key).stop()
        for name, value in with_env.items():
            stack.env[name] = value
        for key in ("api", "processor"):
            stack.start_service(key)
        for key in ("api", "processor"):
            stack.wait_ready(key)

    saved = {name: stack.env.get(name) for name in env}
    restart(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                stack.env.pop(name, None)
            else:
                stack.env[name] = value


def tracing_rows(
    stack: Stack, data_dir: Path, step: Callable[[], dict[str, Any]], wait_idle: Callable[[], None]
) -> dict[str, list[dict[str, Any]]]:
    """One load `step` per sampling setting (see the module's doc)."""
    if not JAEGER_BIN.is_file():
        raise RuntimeError(f"{JAEGER_BIN} missing: `make jaeger` builds it")
    rows: dict[str, list[dict[str, Any]]] = {}
    with Jaeger(data_dir, query_port=0, otlp_port=0, otlp_grpc_port=0) as jaeger:
        for name, ratio in SETTINGS:
            with _restarted(stack, {**jaeger.otlp_env(), "TRACING_SAMPLE_RATIO": ratio}):
                wait_idle()
                result = step()
                result.pop("order_ids", None)
                result["sample_ratio"] = float(ratio)
                rows[name] = [result]
    return rows
