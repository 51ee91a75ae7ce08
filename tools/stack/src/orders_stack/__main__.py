"""`python -m orders_stack`: the whole stack in the foreground until Ctrl-C."""

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from orders_contract.settings import GatewaySettings

from .jaeger import Jaeger
from .oidc import Hydra
from .procs import Proc
from .services import Stack
from .stack import ROOT, Infra


def _port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def _interrupt(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM, at any moment (starting up included): leaving the `with`
    blocks stops every process started so far. A second Ctrl-C does not cut that short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("\nStopping...", flush=True)
    raise KeyboardInterrupt


_AUTH_NONE = """
  AUTH_MODE=none: the open API, anyone who reaches these loopback ports may do anything.
  `make up AUTH_MODE=oidc` starts Ory Hydra and requires tokens.
"""

_AUTH_OIDC = """
  AUTH_MODE=oidc: every endpoint but health, docs and the dashboard's files needs a token
  of the provider at {issuer}. Get one (the last line printed):
    make -s token USER=1                 a customer (user 1's orders only)
    make -s token USER=1 ROLE=staff      staff (every order, the dashboard: paste it there)
    make -s token ROLE=service           a service client (places orders for any user)
  Swagger UI's Authorize takes a pasted token, or the client credentials of orders-service
  (its secret is in .data/stack/oidc.json).
"""


def _try_auth(oidc: bool) -> str:
    return '\n       -H "Authorization: Bearer $(make -s token USER=1)" \\' if oidc else ""


def _try_auth_get(oidc: bool) -> str:
    return ' -H "Authorization: Bearer $(make -s token USER=1)"' if oidc else ""


def _localhost(stack: Stack) -> list[str]:
    urls = [stack.api_url, stack.query_url, *([stack.gateway_url] if stack.gateway_url else [])]
    return [url.replace("127.0.0.1", "localhost") for url in urls]


def _redis(infra: Infra) -> str:
    if not infra.redis_nodes:
        return infra.redis_url
    ports = [node.port for node in infra.redis_nodes]
    return f"{infra.redis_url}  (a cluster's seed: six nodes on {ports[0]}-{ports[-1]}, three masters)"


def _banner(stack: Stack, infra: Infra, jaeger: Jaeger | None, auth: str, oidc: bool, logs: Path) -> str:
    """What is up, where, and the first commands to try."""
    front = (stack.gateway_url or stack.query_url).replace("127.0.0.1", "localhost")
    extra = (
        f"""  Jaeger query API      {jaeger.query_url}/api/traces?service=api
  Jaeger OTLP (HTTP)    {jaeger.otlp_url}
  an order's trace      make trace ORDER=<orderId>
"""
        if jaeger
        else ""
    )
    return f"""
Order tracking is up. Ctrl-C stops everything.
{auth}
  front door            {front}  (Swagger UI at {front}/docs, dashboard at {front}/dashboard)
  api (place orders)    {stack.api_url}/docs
  event contract        {stack.api_url}/asyncapi.json  (status events on Kafka topic orders.status)
  query (read orders)   {stack.query_url}/docs
  live dashboard        {stack.query_url}/dashboard
  processor metrics     {stack.processor_url}/metrics
  Kafka                 {infra.kafka_bootstrap}
  Redis                 {_redis(infra)}
  logs                  {logs}  (make logs follows them)
{extra}
Try:
  curl -si -X POST {front}/api/orders -H 'Content-Type: application/json' \\{_try_auth(oidc)}
       -d '{{"userId":1,"productName":"Laptop","quantity":1,"price":999.99}}'
  curl -s {front}/api/orders/user/1{_try_auth_get(oidc)}
  curl -sN {front}/api/orders/events{_try_auth_get(oidc)}     (follow live; Ctrl-C ends it)
"""


def _start_provider(running: ExitStack, stack: Stack, data_dir: Path) -> tuple[str, list[Proc]]:
    """Ory Hydra for AUTH_MODE=oidc, its clients saved and the services pointed at it."""
    print("Starting Ory Hydra (AUTH_MODE=oidc)...", flush=True)
    hydra = Hydra(
        data_dir,
        public_port=_port("HYDRA_PUBLIC_PORT", 4444),
        admin_port=_port("HYDRA_ADMIN_PORT", 4445),
        cors_origins=[
            stack.api_url,
            stack.query_url,
            *([stack.gateway_url] if stack.gateway_url else []),
            *_localhost(stack),
        ],
    )
    provider = running.enter_context(hydra)
    provider.save(data_dir / "oidc.json")
    stack.env.update(provider.service_env)
    return _AUTH_OIDC.format(issuer=provider.issuer, query=stack.query_url), [
        hydra.proc
    ] if hydra.proc else []


def _watch(procs: Callable[[], list[Proc]]) -> None:
    """Until Ctrl-C: a process that died stops the whole stack (check_alive raises)."""
    while True:
        time.sleep(0.5)
        for proc in procs():
            proc.check_alive()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data-dir", type=Path, default=ROOT / ".data" / "stack", help="where Kafka, Redis and logs live"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("aiokafka", "httpx"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)

    brokers = _port("KAFKA_BROKERS", 1)
    if brokers not in (1, 3):
        parser.error(f"KAFKA_BROKERS is 1 or 3, not {brokers}")
    redis_cluster = _flag("REDIS_CLUSTER")
    infra = Infra(
        args.data_dir,
        kafka_port=_port("KAFKA_PORT", 9092),
        redis_port=_port("REDIS_PORT", 6379),
        kafka_brokers=brokers,
        # KAFKA_BROKERS=3: nodes 2 and 3 on the next ports, the controllers on fixed ones (the
        # quorum's voters name them, across restarts); each node in .data/stack/kafka-<n>.
        kafka_ports=[_port("KAFKA_PORT_2", 9094), _port("KAFKA_PORT_3", 9095)],
        controller_ports=[19093, 29093, 39093],
        kafka_heap="384m" if brokers > 1 else "512m",
        # REDIS_CLUSTER=1: six nodes on REDIS_PORT and the five ports after it (cluster bus ports
        # 10000 above), each in .data/stack/redis-<n>; three masters with a replica each.
        redis_cluster=redis_cluster,
    )
    stack = Stack(
        infra,
        api_port=_port("API_PORT", 8000),
        query_port=_port("QUERY_PORT", 8001),
        processor_port=_port("PROCESSOR_PORT", 8002),
        gateway_port=GatewaySettings().gateway_port,
    )
    tracing = _flag("TRACING")
    jaeger = Jaeger(
        args.data_dir,
        query_port=_port("JAEGER_QUERY_PORT", 16686),
        otlp_port=_port("JAEGER_OTLP_HTTP_PORT", 4318),
        otlp_grpc_port=_port("JAEGER_OTLP_GRPC_PORT", 4317),
    )
    oidc = os.environ.get("AUTH_MODE", "none") == "oidc"
    nodes = f"{brokers} nodes" if brokers > 1 else "one node"
    redis = "a Redis Cluster of six nodes" if redis_cluster else "Redis"
    print(f"Starting Kafka ({nodes}) and {redis} (Kafka takes a few seconds)...", flush=True)
    try:
        with ExitStack() as running:
            if tracing:
                print("Starting Jaeger (TRACING=1)...", flush=True)
                running.enter_context(jaeger)
                stack.env.update(jaeger.otlp_env())
            running.enter_context(infra)
            auth, providers = _start_provider(running, stack, args.data_dir) if oidc else (_AUTH_NONE, [])
            print("Starting api, processor, query and the gateway (nginx)...", flush=True)
            with stack:
                logs = args.data_dir / "logs"
                print(_banner(stack, infra, jaeger if tracing else None, auth, oidc, logs), flush=True)
                _watch(
                    lambda: [
                        *jaeger.procs,
                        *infra.procs,
                        *providers,
                        *stack.procs.values(),
                        *(stack.gateway.procs if stack.gateway else []),
                    ]
                )
    except KeyboardInterrupt:
        print("Stopped; nothing left running.")
    except (RuntimeError, TimeoutError) as exc:
        print(f"\nerror: {exc}\nEverything started was stopped.", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
