"""Prometheus metrics of a service, through prometheus_client: one registry per app.

A service makes one `ServiceMetrics` per app (never the global registry: tests
build many apps in one process), adds `RequestMetrics` to the app for the
latency of every request, by method, route template and status, and serves
`metrics.router()`'s `/metrics` from that registry.

Several workers: `serving.serve` gives the uvicorn workers of one service a
fresh private `PROMETHEUS_MULTIPROC_DIR`. prometheus_client then keeps every
Counter, Gauge and Histogram of a worker in a file there, and the registry
merges the files of all workers at each scrape, so the answer is the same
whichever worker a scrape reaches. Values a collector computes at scrape time
are of the process that answers, unless they come from outside (the Redis
connection count comes from the Redis server); their help says so.
"""

import asyncio
import glob
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from time import perf_counter
from typing import Literal

from fastapi import APIRouter, Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError
from redis.observability.attributes import DB_CLIENT_CONNECTION_STATE, ConnectionState
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "LATENCY_BUCKETS",
    "MULTIPROCESS_DIR_ENV",
    "UNMATCHED",
    "GaugeMode",
    "RequestMetrics",
    "ServiceMetrics",
]

log = logging.getLogger(__name__)

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus_client's switch to multiprocess mode: read when it is first imported."""

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds; the fine low end because most answers take about a millisecond."""

UNMATCHED = "unmatched"
"""The route label of requests no route took (unknown paths; answers given before routing:
413 for a declared body over the limit, CORS preflights): one label, so that a scan of
random paths cannot add series."""

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Other methods are labelled OTHER, for the same reason."""

GaugeMode = Literal[
    "all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum", "mostrecent", "livemostrecent"
]

# `_created` series (each counter's creation time) double the series and do not exist in
# multiprocess mode: left out, so one service exports the same names however it runs.
disable_created_metrics()  # type: ignore[no-untyped-call]  # (prometheus_client leaves it unannotated)


class ServiceMetrics:
    """The metrics of one app: its registry and its request latency histogram.

    `service` prefixes every name (`api`, `query`, `processor`). Make one per app,
    in `create_app`; metric objects made through `counter` and `gauge` are counted
    across workers when the service runs several (see the module's doc).
    """

    def __init__(self, service: str) -> None:
        self.service = service
        self.multiprocess_dir = os.environ.get(MULTIPROCESS_DIR_ENV) or None
        """The workers' shared directory, or None when the process is the whole service."""
        self.registry = CollectorRegistry()
        # In multiprocess mode the metric objects write to files and the registry reads the
        # merged files: registering them as well would export each one twice.
        self._own = None if self.multiprocess_dir else self.registry
        if self.multiprocess_dir:
            self.registry.register(_WorkerFiles(self.multiprocess_dir))
        self.requests = Histogram(
            f"{service}_http_request_duration_seconds",
            "Time to answer an HTTP request, until its last byte is sent (streams: while open).",
            ("method", "route", "status"),
            registry=self._own,
            buckets=LATENCY_BUCKETS,
        )
        self._redis: _RedisConnections | None = None
        self.redis_errors = self.counter(
            "redis_errors", "Redis commands that failed (refused, lost, timed out), by where.", ("where",)
        )

    def histogram(
        self, name: str, documentation: str, labelnames: Sequence[str] = (), buckets: Sequence[float] = ()
    ) -> Histogram:
        """A Histogram `{service}_{name}` of this app, summed over workers."""
        return Histogram(
            f"{self.service}_{name}",
            documentation,
            labelnames,
            registry=self._own,
            buckets=tuple(buckets) or LATENCY_BUCKETS,
        )

    def counter(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
        """A Counter `{service}_{name}_total` of this app, summed over workers."""
        return Counter(f"{self.service}_{name}", documentation, labelnames, registry=self._own)

    def gauge(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        multiprocess_mode: GaugeMode = "livesum",
    ) -> Gauge:
        """A Gauge `{service}_{name}` of this app; with several workers their values combine by
        `multiprocess_mode` (by default the sum over the workers that are running)."""
        return Gauge(
            f"{self.service}_{name}",
            documentation,
            labelnames,
            registry=self._own,
            multiprocess_mode=multiprocess_mode,
        )

    def register(self, collector: Collector) -> None:
        """Add a collector whose `collect()` runs at each scrape, in the process that answers."""
        self.registry.register(collector)

    def process_gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge `{service}_{name}` whose value `read()` gives at each scrape, in the process
        that answers (with several workers: that worker's alone; say so in `documentation`)."""
        self.register(_ReadGauge(f"{self.service}_{name}", documentation, read))

    def client_name(self, pool: str) -> str:
        """The Redis client name of this service instance's `pool` connections, shared by its
        workers (give it to a client made elsewhere: `Redis(..., client_name=...)`)."""
        instance = os.path.basename(self.multiprocess_dir) if self.multiprocess_dir else os.getpid()
        name = f"{self.service}/{pool}@{socket.gethostname()}/{instance}"
        return "".join(c if "!" <= c <= "~" else "_" for c in name)  # Redis refuses spaces

    def watch_redis(self, redis: "Redis | RedisCluster", pool: str = "reads") -> None:
        """Name the connections `redis` opens from now on (call before its first command) and
        export at each scrape:

        - `{service}_redis_connections`: those this instance holds open, all workers
          together, as the Redis server counts them (`CLIENT LIST`, by client name);
        - `{service}_redis_connections_in_use`: those taken by a request now, in the
          process that answers (redis-py's `get_connection_count()`).

        On a Redis Cluster (REDIS_CLUSTER) both count over every node.
        """
        name = self.client_name(pool)
        if isinstance(redis, RedisCluster):
            # A pool per node, each made from the nodes manager's arguments.
            redis.nodes_manager.connection_kwargs["client_name"] = name
        else:
            redis.connection_pool.connection_kwargs["client_name"] = name
        if self._redis is None:
            self._redis = _RedisConnections(self.service)
            self.register(self._redis)
        self._redis.watch(redis, name)

    async def render(self, accept: str | None = None) -> Response:
        """The registry in the Prometheus text format (OpenMetrics if `accept` asks for it)."""
        if self._redis is not None:
            await self._redis.refresh()
        try:
            encode, content_type = choose_encoder(accept or "")
            body = encode(self.registry)
        except (TypeError, ValueError):  # a version in `accept` that prometheus_client cannot compare
            content_type, body = CONTENT_TYPE_PLAIN_0_0_4, generate_latest(self.registry)
        return Response(body, media_type=content_type)

    def router(self, path: str = "/metrics") -> APIRouter:
        """`GET /metrics`: this app's metrics, for Prometheus."""
        router = APIRouter()

        @router.get(
            path, summary="Prometheus metrics", response_class=PlainTextResponse, include_in_schema=False
        )
        async def metrics(request: Request) -> Response:
            return await self.render(request.headers.get("accept"))

        return router


class RequestMetrics:
    """ASGI middleware: observes each HTTP request's duration in `metrics.requests`, labelled
    by method, route template (`/api/orders/{orderId}`, never the raw path) and status.

    Add it after `install_common`, so that it is the outermost: it then sees the direct
    routes too (they set `scope["route"]` as the router does) and answers given before
    routing (labelled `unmatched`). The route is read after the app has answered, when
    routing has happened. A route's template is its `path`: give an included router its
    prefix when it is made (`APIRouter(prefix=...)`), not at `include_router`, whose
    prefix FastAPI does not put in the route.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self._histogram = metrics.requests
        # Label lookups cost more than the observation: each label set's child, once.
        self._children: dict[tuple[str, str, int], Histogram] = {}
        self._endpoint_paths: dict[object, str] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the server-error middleware answers if the app raises first

        def sending(message: Message) -> Awaitable[None]:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            return send(message)

        start = perf_counter()
        try:
            await self.app(scope, receive, sending)
        finally:
            self._observe(scope, status, perf_counter() - start)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        path = getattr(route, "path", None) if route is not None else self._endpoint_path(scope)
        method = scope["method"]
        key = (method if method in _METHODS else "OTHER", path or UNMATCHED, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._histogram.labels(*key)
        child.observe(seconds)

    def _endpoint_path(self, scope: Scope) -> str:
        """The path of a plain Starlette route, which FastAPI's router leaves out of the scope
        (the docs, `openapi.json`): found by its endpoint, once per endpoint."""
        endpoint = scope.get("endpoint")
        if endpoint is None:
            return UNMATCHED
        path = self._endpoint_paths.get(endpoint)
        if path is None:
            routes = getattr(getattr(scope.get("app"), "router", None), "routes", ())
            found = (r.path for r in routes if isinstance(r, Route) and r.endpoint is endpoint)
            path = self._endpoint_paths[endpoint] = next(found, UNMATCHED)
        return path


class _ReadGauge(Collector):
    def __init__(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        self._name, self._documentation, self._read = name, documentation, read

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(self._name, self._documentation, value=self._read())


class _RedisConnections(Collector):
    """See `ServiceMetrics.watch_redis`. The server's count is taken before each scrape
    (`refresh`), as a collector cannot await; left out when Redis does not answer."""

    def __init__(self, service: str) -> None:
        self._service = service
        self._redis: Redis | RedisCluster | None = None
        self._name = ""
        self._open: int | None = None

    def watch(self, redis: "Redis | RedisCluster", name: str) -> None:
        self._redis, self._name, self._open = redis, name, None

    async def refresh(self) -> None:
        if self._redis is None:
            return
        try:
            if isinstance(self._redis, RedisCluster):
                every = await asyncio.wait_for(
                    self._redis.client_list(target_nodes=RedisCluster.ALL_NODES), 2.0
                )
                # A list per node, keyed by the node's name (typed as one list).
                per_node: dict[str, list[dict[str, str]]] = every  # type: ignore[assignment]
                clients = [client for node in per_node.values() for client in node]
            else:
                clients = await asyncio.wait_for(self._redis.client_list(), 2.0)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("counting Redis connections failed: %r", exc)
            self._open = None
            return
        self._open = sum(1 for client in clients if client.get("name") == self._name)

    def collect(self) -> Iterable[Metric]:
        if self._redis is None:
            return
        if self._open is not None:
            yield GaugeMetricFamily(
                f"{self._service}_redis_connections",
                f"Redis connections of this instance's pool (all workers), counted by the "
                f"Redis server; client name {self._name}.",
                value=self._open,
            )
        yield GaugeMetricFamily(
            f"{self._service}_redis_connections_in_use",
            "Connections of that pool taken by a request now, in the process that answers.",
            value=_in_use(self._redis),
        )


def _in_use(redis: "Redis | RedisCluster") -> int:
    if isinstance(redis, RedisCluster):
        # redis-py's cluster client has a pool per node and no count of its own: made less free.
        return sum(len(node._connections) - len(node._free) for node in redis.get_nodes())
    used = ConnectionState.USED.value
    counts = redis.connection_pool.get_connection_count()
    return sum(n for n, attributes in counts if attributes.get(DB_CLIENT_CONNECTION_STATE) == used)


class _WorkerFiles(Collector):
    """Every worker's metrics, merged from the shared directory; first forgets the live gauges
    (`livesum` and the like) of workers that no longer run (crashed, or replaced by uvicorn),
    so that what they held open stops counting. Their counters stay: totals never go back."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._merged = MultiProcessCollector(None, path)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        for pid in _live_gauge_writers(self._path):
            if not _running(pid):
                mark_process_dead(pid, self._path)  # type: ignore[no-untyped-call]
        merged: Iterable[Metric] = self._merged.collect()  # type: ignore[no-untyped-call]
        return merged


def _live_gauge_writers(path: str) -> set[int]:
    """The processes with live-gauge files in `path` (named `gauge_live<mode>_<pid>.db`)."""
    pids = set()
    for file in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        pid = os.path.basename(file)[: -len(".db")].rsplit("_", 1)[1]
        if pid.isdigit():
            pids.add(int(pid))
    return pids


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user
    return True
