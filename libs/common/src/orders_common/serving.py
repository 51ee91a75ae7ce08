"""Running a service's HTTP app: one uvicorn configuration for all of them."""

import logging
from typing import Protocol

import uvicorn

__all__ = ["configure_logging", "serve"]


class ServedSettings(Protocol):
    """What serving needs of a service's settings."""

    @property
    def bind_host(self) -> str: ...

    @property
    def log_level(self) -> str: ...


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def serve(factory: str, settings: ServedSettings, port: int, workers: int = 1) -> None:
    """Serve `module:function` (an app factory) with uvloop and httptools."""
    configure_logging(settings.log_level)
    uvicorn.run(
        factory,
        factory=True,
        host=settings.bind_host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level.lower(),
        access_log=False,
        proxy_headers=False,  # nothing reads the client's address
        server_header=False,
        timeout_graceful_shutdown=10,
    )
