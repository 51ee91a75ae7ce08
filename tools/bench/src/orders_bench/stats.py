"""Percentiles and latency summaries (pure, unit tested)."""

import math
from collections.abc import Sequence
from typing import TypedDict

__all__ = ["LatencySummary", "percentile", "ratio", "summarize"]


class LatencySummary(TypedDict):
    """Latencies in milliseconds."""

    count: int
    mean: float | None
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None


def percentile(samples: Sequence[float], pct: float) -> float:
    """The `pct` percentile (0..100) with linear interpolation between closest ranks.

    Same definition as numpy's default (`method="linear"`): sorted samples
    x[0..n-1], rank = pct/100 * (n-1), interpolate between the two neighbours.
    """
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile must be within 0..100, not {pct}")
    ordered = sorted(samples)
    rank = pct / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(seconds: Sequence[float]) -> LatencySummary:
    """Count, mean, p50/p95/p99 and max of latencies given in seconds, reported in ms."""
    if not seconds:
        return LatencySummary(count=0, mean=None, p50=None, p95=None, p99=None, max=None)
    ms = sorted(s * 1000 for s in seconds)
    return LatencySummary(
        count=len(ms),
        mean=round(sum(ms) / len(ms), 3),
        p50=round(percentile(ms, 50), 3),
        p95=round(percentile(ms, 95), 3),
        p99=round(percentile(ms, 99), 3),
        max=round(ms[-1], 3),
    )


def ratio(value: float | None, ceiling: float | None) -> float | None:
    """value / ceiling, or None when either is unknown or the ceiling is not positive."""
    if value is None or ceiling is None or ceiling <= 0:
        return None
    return round(value / ceiling, 4)
