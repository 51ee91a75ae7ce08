"""The answers that report on the system rather than carry orders: statistics and health."""

from pydantic import Field, RootModel

from .models import OrderStatus, WireModel

__all__ = ["Liveness", "OrderStats", "Readiness"]


class OrderStats(WireModel):
    """`GET /api/orders/stats`: orders per status and orders placed per second."""

    counts: dict[OrderStatus, int] = Field(description="Orders now in each status.")
    total: int = Field(description="Every order, the sum of `counts`.")
    per_second: list[int] = Field(
        description="Orders created in each second, oldest first, the first starting at `since`."
    )
    since: int = Field(description="Start of the first second of `perSecond`, epoch milliseconds.")
    now: int = Field(description="The server's clock, epoch milliseconds.")
    position: str = Field(
        description="The update stream's position: follow `/api/orders/events` from it "
        "(`Last-Event-ID`) to keep the numbers current."
    )


class Liveness(WireModel):
    """`GET /health/live`: the process answers."""

    status: str = Field(description='Always "live".')


class Readiness(RootModel[dict[str, str]]):
    """`GET /health/ready`: each dependency (`kafka`, `redis`) and "ok", or "down: " and why."""
