"""Redis key names of the read model; nothing else spells them."""

from dataclasses import dataclass

__all__ = ["Keys"]


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix (tests give each their own)."""

    prefix: str = ""

    def order(self, order_id: str) -> str:
        """Hash: the order's fields, as the API returns them."""
        return f"{self.prefix}order:{order_id}"

    def history(self, order_id: str) -> str:
        """List: one JSON entry per transition, oldest first."""
        return f"{self.prefix}order:{order_id}:history"

    @property
    def all_orders(self) -> str:
        """Sorted set: every order id, score 0, so ids sort by text (UUIDv7: by time)."""
        return f"{self.prefix}orders:all"

    def by_user(self, user_id: int) -> str:
        """Sorted set like all_orders, one user's orders."""
        return f"{self.prefix}orders:user:{user_id}"

    def by_status(self, status: str) -> str:
        """Sorted set like all_orders, the orders now in a status."""
        return f"{self.prefix}orders:status:{status}"

    def abandoned(self, order_id: str) -> str:
        """Set: ids of the order's Kafka events that the api answered 503 for; never applied."""
        return f"{self.prefix}order:{order_id}:abandoned"

    def idempotency(self, user_id: int, key_digest: str) -> str:
        """String: the order an `Idempotency-Key` of a user placed, with the request's fingerprint."""
        return f"{self.prefix}idempotency:{user_id}:{key_digest}"

    def health(self, service: str) -> str:
        """String with a TTL: a service's readiness probe writes its time here (Redis takes writes)."""
        return f"{self.prefix}health:{service}"

    def rate_limit(self, principal_digest: str, window: int) -> str:
        """Counter with a TTL: requests of a principal (its SHA-256) in one rate-limit window."""
        return f"{self.prefix}ratelimit:{principal_digest}:{window}"

    def stream_ticket(self, ticket_digest: str) -> str:
        """String with a TTL: the principal a stream ticket (its SHA-256) stands for, used once."""
        return f"{self.prefix}ticket:{ticket_digest}"

    @property
    def updates(self) -> str:
        """Stream: one entry per transition, capped in length, for live clients."""
        return f"{self.prefix}orders:updates"

    @property
    def relay_lease(self) -> str:
        """String with a TTL: the processor that publishes the update stream to Kafka now."""
        return f"{self.prefix}relay:lease"
