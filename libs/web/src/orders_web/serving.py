"""Running a service's HTTP app: one uvicorn configuration for all of them."""

import contextlib
import gc
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import uvicorn

from orders_contract.settings import HttpSettings
from orders_runtime import logs
from orders_web.limits import HttpLimits, limited_protocol
from orders_web.metrics import MULTIPROCESS_DIR_ENV

__all__ = [
    "configure_logging",
    "freeze_startup_heap",
    "http_limits",
    "http_options",
    "metrics_directory",
    "serve",
]


def configure_logging(level: str, fmt: str = "text", service: str = "") -> None:
    """Log at `level` as text or, with `fmt` "json", as JSON lines naming `service` (logs.py)."""
    logs.configure_logging(level, fmt, service)


def freeze_startup_heap() -> None:
    """Leave what start-up allocated (modules, the app, clients) out of every later garbage
    collection: full collections then scan only what work creates, instead of stalling a
    loaded service (README, Performance). Call once a service has started; only the first call
    in a process freezes (tests start many apps in one process: later ones stay collectable)."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()


_frozen = False


@contextlib.contextmanager
def metrics_directory(workers: int) -> Iterator[str | None]:
    """With several workers, a fresh private directory for their metrics, named in
    `PROMETHEUS_MULTIPROC_DIR` (see orders_web.metrics) for the workers to inherit, and
    removed at exit; with one, nothing (the process keeps its metrics in memory).

    Enter it before the workers start: prometheus_client reads the variable when a
    worker first imports it. Fresh, because counters in files left by an earlier run
    would be summed with the new ones."""
    if workers <= 1:
        yield None
        return
    path = tempfile.mkdtemp(prefix=f"orders-metrics-{os.getpid()}-")
    previous = os.environ.get(MULTIPROCESS_DIR_ENV)
    os.environ[MULTIPROCESS_DIR_ENV] = path
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(MULTIPROCESS_DIR_ENV, None)
        else:
            os.environ[MULTIPROCESS_DIR_ENV] = previous
        shutil.rmtree(path, ignore_errors=True)


def http_limits(settings: HttpSettings) -> HttpLimits:
    """The connection limits `settings` name."""
    return HttpLimits(
        header_timeout=settings.http_header_timeout_s,
        idle_timeout=settings.http_idle_timeout_s,
        max_header_bytes=settings.http_max_header_bytes,
        max_connections=settings.http_max_connections,
        body_timeout=settings.http_body_timeout_s,
    )


def http_options(settings: HttpSettings) -> dict[str, Any]:
    """uvicorn options every HTTP server of the project uses (`uvicorn.run` or `uvicorn.Config`):
    httptools with the limits of `settings` (see orders_web.limits). uvicorn's own
    `limit_concurrency` is not used: it answers plain text and, once over, refuses requests on
    every connection (and counts running requests, so long-lived streams), where the limit here
    refuses only new connections."""
    limits = http_limits(settings)
    return {
        "http": limited_protocol(limits),
        # The protocol sets the idle timeout itself (uvicorn takes whole seconds); kept in step.
        "timeout_keep_alive": max(1, round(limits.idle_timeout)),
    }


def serve(
    factory: str,
    settings: HttpSettings,
    port: int,
    workers: int = 1,
    log_level: str = "INFO",
    log_format: str = "text",
) -> None:
    """Serve `module:function` (an app factory) with uvloop and httptools, with the connection
    limits of `settings` (see `http_options`); `workers` > 1 processes share the port and their
    metrics (see `metrics_directory`). Every worker logs as `log_format` asks (logs.py)."""
    service = factory.split(".", 1)[0].removeprefix("orders_")
    configure_logging(log_level, log_format, service)
    with metrics_directory(workers):
        uvicorn.run(
            factory,
            factory=True,
            host=settings.bind_host,
            port=port,
            workers=workers,
            loop="uvloop",
            **http_options(settings),
            log_level=log_level.lower(),
            log_config=logs.logging_config(log_level, log_format, service),
            access_log=False,
            proxy_headers=False,  # nothing reads the client's address
            server_header=False,
            timeout_graceful_shutdown=10,
        )
