"""Open-loop pacing: when each request of a fixed-rate run is due (pure, unit tested).

An open-loop generator sends on a schedule that does not wait for answers:
request i is due at `i / rate` seconds after the start. A slow server does
not slow the schedule down (no coordinated omission): latency is measured
from the moment a request was due, so waiting for a free connection or a
late event-loop tick counts against the system, as a real client would feel.
"""

import math

__all__ = ["Schedule"]


class Schedule:
    """Request i (from 0) is due at `start + i / rate`; `total` requests in `duration` seconds."""

    def __init__(self, rate: float, duration: float, start: float = 0.0) -> None:
        if rate <= 0 or duration <= 0:
            raise ValueError("rate and duration must be positive")
        self.rate = rate
        self.duration = duration
        self.start = start
        self.total = max(1, math.ceil(rate * duration - 1e-9))

    def due_at(self, index: int) -> float:
        """When request `index` should be sent."""
        return self.start + index / self.rate

    def due_by(self, now: float) -> int:
        """How many requests should have been sent by `now` (never more than `total`)."""
        if now < self.start:
            return 0
        return min(self.total, math.floor((now - self.start) * self.rate + 1e-9) + 1)

    def next_wait(self, sent: int, now: float) -> float:
        """Seconds to sleep before the next request is due (0 when one is due already)."""
        if sent >= self.total:
            return 0.0
        return max(0.0, self.due_at(sent) - now)
