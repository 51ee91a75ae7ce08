"""Fixtures of the query service's tests: the app served by a real HTTP server (SSE needs one
that streams, not ASGI in memory)."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager

import httpx
import pytest
import uvicorn

from orders_query.app import create_app
from orders_query.settings import Settings
from orders_stack import free_port

Serve = Callable[[Settings], AbstractAsyncContextManager[httpx.AsyncClient]]


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the test runner owns the signals


@contextlib.asynccontextmanager
async def _serve(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The query app served by uvicorn on a free loopback port, in this event loop, and a
    client of it; the server is stopped on the way out."""
    port = free_port()
    server = _Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@pytest.fixture
def serve() -> Serve:
    """`async with serve(settings) as client`: the query app on a real server."""
    return _serve
