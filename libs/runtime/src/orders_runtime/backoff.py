"""The one retry backoff of every retry loop: exponential, capped, with bounded jitter, reset on success.

A loop keeps one `Backoff`, awaits `backoff.wait()` (or `wait(stopping)`, which returns early
when the event is set) after each failure, and calls `backoff.reset()` after a success:

    backoff = Backoff(first=0.05, cap=5.0)
    while True:
        try:
            await step()
        except RedisError as exc:
            log.warning("step failed (%r); retrying in %.2fs", exc, backoff.next_delay)
            await backoff.wait()
            continue
        backoff.reset()

The delay doubles from `first` up to `cap`. Jitter (a random share of the delay, `jitter`
of it at most) keeps many clients that failed together from retrying together.
"""

import asyncio
import contextlib
import random

__all__ = ["Backoff"]


class Backoff:
    def __init__(self, first: float = 0.1, cap: float = 5.0, jitter: float = 0.2) -> None:
        if not 0 < first <= cap:
            raise ValueError("0 < first <= cap")
        if not 0 <= jitter < 1:
            raise ValueError("0 <= jitter < 1")
        self.first, self.cap, self.jitter = first, cap, jitter
        self._base = first
        self.failures = 0
        self.next_delay = self._jittered()

    def _jittered(self) -> float:
        return self._base * (1 - self.jitter * random.random())  # noqa: S311 (not cryptographic)

    def advance(self) -> float:
        """The delay to wait now, and the next one doubled (up to the cap)."""
        delay = self.next_delay
        self.failures += 1
        self._base = min(self._base * 2, self.cap)
        self.next_delay = self._jittered()
        return delay

    async def wait(self, stopping: asyncio.Event | None = None) -> None:
        """Sleep the current delay (less if `stopping` is set meanwhile), then double it."""
        delay = self.advance()
        if stopping is None:
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), delay)

    def reset(self) -> None:
        """After a success: the next failure waits `first` again."""
        self._base = self.first
        self.failures = 0
        self.next_delay = self._jittered()
