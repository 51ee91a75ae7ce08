"""The order lifecycle: which transition is allowed from which status.

    PLACED --> PROCESSING --> COMPLETED
       \\            \\
        --> CANCELLED  --> FAILED

This table is the only statement of the rules: the Redis script that applies
transitions receives the allowed sources from here.
"""

from orders_contract.models import OrderStatus

__all__ = ["ALLOWED_FROM", "TIME_FIELD", "can_transition"]

ALLOWED_FROM: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PLACED: frozenset(),  # only by creation
    OrderStatus.PROCESSING: frozenset({OrderStatus.PLACED}),
    OrderStatus.COMPLETED: frozenset({OrderStatus.PROCESSING}),
    OrderStatus.CANCELLED: frozenset({OrderStatus.PLACED}),
    OrderStatus.FAILED: frozenset({OrderStatus.PROCESSING}),
}

TIME_FIELD: dict[OrderStatus, str] = {
    OrderStatus.PLACED: "createdAt",
    OrderStatus.PROCESSING: "processedAt",
    OrderStatus.COMPLETED: "completedAt",
    OrderStatus.CANCELLED: "cancelledAt",
    OrderStatus.FAILED: "failedAt",
}
"""The order field that records when the order entered each status."""


def can_transition(current: OrderStatus, target: OrderStatus) -> bool:
    return current in ALLOWED_FROM[target]
