"""Rate limits: how many requests one principal may make per fixed window, counted in Redis
(`orders_readmodel.counters`), so that the limit holds across workers and services."""

import hashlib
import logging
import time
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from orders_contract.keys import Keys
from orders_contract.settings import AuthSettings
from orders_readmodel.counters import WindowCounters
from orders_web.auth.principal import Principal, Role
from orders_web.http import redis_error_text, redis_refusal

__all__ = ["Limited", "RateLimiter"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Limited:
    """Over the limit: retry after so many seconds (the window's end)."""

    retry_after: int


class RateLimiter:
    """`RATE_LIMIT_REQUESTS` per customer, `RATE_LIMIT_TRUSTED_REQUESTS` per staff or service
    client, each `RATE_LIMIT_WINDOW_S`; nobody is counted in AUTH_MODE=none."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self._counters: WindowCounters | None = None

    def start(self, redis: "Redis", keys: Keys) -> None:
        self._counters = WindowCounters(redis, keys)

    async def charge(self, principal: Principal, requests: int = 1) -> Limited | None:
        """Count `requests` (more than one for a request that costs as much: a live stream's
        catch-up) against the principal's window; `Limited` once over the limit."""
        s = self.settings
        allowed = s.rate_limit_requests if principal.role is Role.CUSTOMER else s.rate_limit_trusted_requests
        if principal.role is Role.ANONYMOUS or allowed == 0 or requests <= 0:
            return None
        assert self._counters is not None, "RateLimiter.start was not called"
        now = time.time()
        window = int(now // s.rate_limit_window_s)
        owner = hashlib.sha256(principal.idempotency_owner.encode()).hexdigest()
        try:
            count = await self._counters.add(owner, window, requests, s.rate_limit_window_s)
        except RedisError as exc:
            if redis_refusal(exc) not in ("OOM", "READONLY"):
                raise
            # A full or read-only Redis still serves reads: the limit is not counted meanwhile.
            log.warning("rate limit not counted, redis refuses writes: %s", redis_error_text(exc))
            return None
        if count <= allowed:
            return None
        return Limited(max(1, int((window + 1) * s.rate_limit_window_s - now + 0.999)))
