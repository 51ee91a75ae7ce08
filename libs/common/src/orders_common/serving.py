"""Running a service's HTTP app: one uvicorn configuration for all of them."""

import logging

import uvicorn

__all__ = ["configure_logging", "serve"]


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def serve(factory: str, *, host: str, port: int, log_level: str, workers: int = 1) -> None:
    """Serve `module:function` (an app factory) with uvloop and httptools."""
    configure_logging(log_level)
    uvicorn.run(
        factory,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        log_level=log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=10,
    )
