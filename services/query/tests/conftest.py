"""Fixtures of the query service's tests: the app served by a real HTTP server (SSE needs one
that streams, not ASGI in memory)."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
import uvicorn

from orders_contract.models import Order
from orders_query.app import create_app
from orders_query.settings import Settings
from orders_readmodel.store import OrderStore
from orders_stack import free_port

from .oidc_provider import USER_A, USER_B, KeyProvider, oidc_settings

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


@pytest.fixture(scope="module")
def provider() -> Iterator[KeyProvider]:
    running = KeyProvider()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
async def query(
    test_env: dict[str, str], provider: KeyProvider, serve: Any
) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(oidc_settings(test_env, provider)) as client:
        yield client


@pytest.fixture
async def orders(store: OrderStore, new_order: Callable[..., Order]) -> dict[int, Order]:
    """One order of user A, one of user B."""
    placed = {user: new_order(user_id=user) for user in (USER_A, USER_B)}
    for order in placed.values():
        await store.create(order)
    return placed
