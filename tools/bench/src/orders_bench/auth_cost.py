"""What access control costs: the same POST and GET by id, in AUTH_MODE=none and oidc, one run.

The bench's own stack runs in `none`. This phase starts Ory Hydra and a second
api and query in `oidc` on the same Kafka topic, Redis and key prefix (so they
read the same orders), with no processor of their own, and measures each route
back to back on both: wrk, the same connections and duration. The oidc requests
carry a service client's token from Hydra (verified once, then found in the
token cache) and are counted by the Redis rate limit (set high enough never to
refuse), so the figure is what a request pays in oidc: the middleware, the token
cache look-up and the rate limit's INCR.
"""

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from orders_stack import Stack, free_port
from orders_stack.oidc import Hydra

from .kafka_load import ORDER_JSON
from .wrk import get_ids_script, post_script, run_wrk

__all__ = ["auth_cost", "oidc_stack"]


@contextlib.contextmanager
def oidc_stack(stack: Stack, data_dir: Path) -> Iterator[tuple[Stack, str]]:
    """Hydra, and an api and a query in oidc beside `stack` (same Kafka, Redis, topic and key
    prefix); yields them with a service client's token. Everything is stopped on the way out."""
    with Hydra(data_dir / "hydra", public_port=0, admin_port=0) as provider:
        env = {
            **stack.env,
            **provider.service_env,
            "RATE_LIMIT_REQUESTS": "1000000000",
            "RATE_LIMIT_TRUSTED_REQUESTS": "1000000000",
        }
        oidc = Stack(
            stack.infra, api_port=free_port(), query_port=free_port(), processor_port=free_port(), env=env
        )
        try:
            for name in ("api", "query"):
                oidc.start_service(name)
            for name in ("api", "query"):
                oidc.wait_ready(name)
            yield oidc, provider.service_token()
        finally:
            oidc.stop()


def _with_token(script: str, token: str) -> str:
    return f'wrk.headers["Authorization"] = "Bearer {token}"\n' + script


def auth_cost(stack: Stack, ids: Sequence[str], duration: float, data_dir: Path) -> dict[str, Any]:
    """POST /api/orders and GET /api/orders/{id} at saturation, none then oidc for each."""
    results: dict[str, Any] = {"none": {}, "oidc": {}, "ratio": {}}
    with oidc_stack(stack, data_dir) as (oidc, token):
        routes = {
            "post": ("api_url", "/api/orders", post_script(ORDER_JSON)),
            "get_id": ("query_url", "", get_ids_script("/api/orders/", ids)),
        }
        for route, (which, path, script) in routes.items():
            none = run_wrk(getattr(stack, which) + path, script, duration)
            secured = run_wrk(getattr(oidc, which) + path, _with_token(script, token), duration)
            results["none"][route], results["oidc"][route] = none, secured
            if none["ok_rps"]:
                results["ratio"][route] = round(secured["ok_rps"] / none["ok_rps"], 3)
    return results
