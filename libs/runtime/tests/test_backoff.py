import asyncio

import pytest

from orders_runtime.backoff import Backoff


def test_the_delay_doubles_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(first=0.1, cap=0.5, jitter=0)
    assert [backoff.advance() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert backoff.failures == 5
    backoff.reset()
    assert backoff.advance() == 0.1
    assert backoff.failures == 1


def test_jitter_shortens_a_delay_by_at_most_its_share() -> None:
    backoff = Backoff(first=1.0, cap=1.0, jitter=0.25)
    delays = [backoff.advance() for _ in range(200)]
    assert all(0.75 <= delay <= 1.0 for delay in delays)
    assert len(set(delays)) > 1


@pytest.mark.parametrize(("first", "cap", "jitter"), [(0, 1, 0), (2, 1, 0), (0.1, 1, 1), (0.1, 1, -0.1)])
def test_nonsense_is_refused(first: float, cap: float, jitter: float) -> None:
    with pytest.raises(ValueError, match="<"):
        Backoff(first=first, cap=cap, jitter=jitter)


async def test_wait_returns_early_once_stopping_is_set() -> None:
    backoff = Backoff(first=30, cap=30, jitter=0)
    stopping = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stopping.set)
    async with asyncio.timeout(25):  # fails only if it sleeps the whole 30 s delay
        await backoff.wait(stopping)
    assert stopping.is_set()
    assert backoff.failures == 1
