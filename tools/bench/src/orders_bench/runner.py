"""One bench run: start what is needed, measure in a fixed order, always stop what was started.

Order of the phases (each bounded in time):

1. ceilings: the bare FastAPI app (POST, GET by id, GET list) in each bare
   configuration, the load generator against it (achieved vs offered),
   Kafka's ProducerPerformance, redis-benchmark;
2. the load curve with PROCESSING_DELAY_MS=0: ingest and end-to-end
   latency at rising fixed rates until saturation;
3. reads (wrk) over the orders just placed;
4. ingest saturation (wrk) and bulk ingest (wrk, 1,000 orders a request);
5. the tutorial's one-at-a-time consumer on a preloaded topic;
6. our processor with the 200 ms delay draining a preloaded backlog, then
   the load curve again with that delay (api and processor restarted on a
   fresh topic, so the backlog of steps 2-4 does not get in the way).
"""

import asyncio
import contextlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis
from rich.progress import Progress

from orders_contract.keys import Keys
from orders_contract.models import OrderStatus
from orders_readmodel.stream import UpdateStream
from orders_stack import Stack, free_port
from orders_stack.metrics import metric_value
from orders_stack.procs import Proc, wait_until
from orders_stack.stack import KAFKA_LIBS

from .auth_cost import auth_cost
from .ceilings import producer_perf, redis_benchmark
from .feeds import FeedKind
from .kafka_load import ORDER_JSON, create_topic, event_size, preload
from .loadgen import STUCK_EXIT, LoadSpec, bound_s
from .plan import Plan, Steps, Target
from .tracing_cost import tracing_rows
from .wrk import get_ids_script, get_script, post_script, run_wrk

__all__ = ["Bench", "Results"]

Results = dict[str, Any]


def _loadgen(spec: LoadSpec) -> dict[str, Any]:
    """Run the fixed-rate generator in its own process; bounded in time."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "orders_bench.loadgen"],
            input=json.dumps(asdict(spec)),
            capture_output=True,
            text=True,
            timeout=bound_s(spec),
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        raise RuntimeError(
            f"load generator overstayed {exc.timeout:.0f}s; it was waiting in: {stderr[-3000:]}"
        ) from None
    if done.returncode == STUCK_EXIT:
        raise RuntimeError(f"load generator stuck near its {bound_s(spec):.0f}s bound: {done.stderr[-4000:]}")
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _wait_http(url: str, proc: Proc | None = None, timeout: float = 30) -> None:
    wait_until(url, lambda: httpx.get(url, timeout=2).status_code == 200, timeout, [proc] if proc else [])


@contextlib.contextmanager
def _bare_server(workers: int, logs: Path) -> Iterator[str]:
    port = free_port()
    proc = Proc(
        f"bare-{workers}w",
        [sys.executable, "-m", "orders_bench.bare", str(port), str(workers)],
        logs / f"bare-{workers}w.log",
    ).start()
    try:
        _wait_http(f"http://127.0.0.1:{port}/health/ready", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop(10)


def _fake_ids(count: int = 1000) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(count)]


class Bench:
    def __init__(self, plan: Plan, target: Target, feed: FeedKind, out: Path, logs: Path) -> None:
        self.plan = plan
        self.target = target
        self.feed = feed
        self.out = out
        self.logs = logs
        self.results: Results = {"ceilings": {}, "curves": {}, "ingest": {}, "reads": {}, "baseline": {}}
        self.errors: list[str] = []
        self.order_ids: list[str] = []

    # -- helpers ---------------------------------------------------------------

    def guarded(self, what: str, step: Callable[[], Any], where: tuple[str, ...]) -> None:
        """Run one measurement; a failure is recorded in the report, and the run goes on."""
        try:
            value = step()
        except (
            RuntimeError,
            OSError,
            ValueError,
            TimeoutError,
            subprocess.TimeoutExpired,
            httpx.HTTPError,
        ) as exc:
            self.errors.append(f"{what}: {exc}")
            value = {"error": str(exc)}
        node = self.results
        for key in where[:-1]:
            node = node.setdefault(key, {})
        node[where[-1]] = value

    def _spec(
        self, url: str, rate: float, *, e2e: bool, body: str | None = ORDER_JSON, keep_ids: int = 0
    ) -> LoadSpec:
        delay = (self.target.processor_delay_ms or 0) / 1000
        return LoadSpec(
            url=url,
            rate=rate,
            duration=self.plan.curve_step_s,
            body=body,
            grace=self.plan.grace_s,
            feed=self.feed if e2e else None,
            redis_url=self.target.redis_url,
            key_prefix=self.target.key_prefix,
            query_url=self.target.query_url,
            e2e_grace=self.plan.e2e_grace_s + delay,
            keep_ids=keep_ids,
        )

    # -- phases ----------------------------------------------------------------

    def ceilings(self, steps: Steps) -> None:
        plan = self.plan
        configs: list[dict[str, Any]] = []
        self.results["ceilings"]["bare"] = configs
        body = ORDER_JSON
        ids = _fake_ids()
        for workers in plan.bare_workers:
            config: dict[str, Any] = {
                "workers": workers,
                "server": "uvicorn, uvloop, httptools (orders_web.serving)",
            }
            configs.append(config)
            with _bare_server(workers, self.logs) as url:
                steps.now(f"ceiling: bare FastAPI POST, {workers} worker(s)")
                config["post"] = run_wrk(f"{url}/api/orders", post_script(body), plan.wrk_s)
                steps.done()
                steps.now(f"ceiling: bare FastAPI GET by id and list, {workers} worker(s)")
                config["get_id"] = run_wrk(url, get_ids_script("/api/orders/", ids), plan.wrk_s)
                config["get_list"] = run_wrk(f"{url}/api/orders?limit=20", get_script(), plan.wrk_s)
                steps.done()
                if workers == plan.bare_workers[0]:
                    checks: list[dict[str, Any]] = []
                    self.results["generator_check"] = checks
                    for rate in plan.generator_check_rates:
                        steps.now(f"load generator against the bare app at {rate}/s")
                        checks.append(_loadgen(self._spec(f"{url}/api/orders", rate, e2e=False)))
                        steps.done()
        if self.target.kafka_bootstrap:
            steps.now("ceiling: Kafka ProducerPerformance (acks=all)")

            def kafka() -> dict[str, Any]:
                asyncio.run(create_topic(self.target.kafka_bootstrap, "bench-producer-perf"))
                return producer_perf(
                    KAFKA_LIBS,
                    self.target.kafka_bootstrap,
                    "bench-producer-perf",
                    plan.kafka_records,
                    event_size(),
                )

            self.guarded("ProducerPerformance", kafka, ("ceilings", "kafka"))
        else:
            self.results["ceilings"]["kafka"] = {"skipped": "no Kafka bootstrap given"}
        steps.done()
        port = self.target.redis_port
        if port is not None:
            steps.now("ceiling: redis-benchmark")
            self.guarded(
                "redis-benchmark", lambda: redis_benchmark(port, plan.redis_requests), ("ceilings", "redis")
            )
        else:
            self.results["ceilings"]["redis"] = {"skipped": "no Redis URL given"}
        steps.done()

    def curve(self, name: str, rates: tuple[int, ...], steps: Steps) -> None:
        """Fixed rates, rising, until the system no longer keeps up (then one step more is pointless)."""
        out: list[dict[str, Any]] = []
        self.results["curves"][name] = out
        self._wait_idle()
        for done, rate in enumerate(rates):
            steps.now(f"{name.replace('_', ' ')}: {rate} orders/s for {self.plan.curve_step_s:.0f}s")
            keep = 1000 if not self.order_ids else 0
            try:
                result = _loadgen(
                    self._spec(f"{self.target.api_url}/api/orders", rate, e2e=True, keep_ids=keep)
                )
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                self.errors.append(f"{name} at {rate}/s: {exc}")
                steps.done(len(rates) - done)
                return
            self.order_ids = self.order_ids or result.pop("order_ids", [])
            result.pop("order_ids", None)
            out.append(result)
            steps.done()
            kept_up = (
                result["achieved_rate"] >= 0.9 * rate
                and not result["non_2xx"]
                and bool(result.get("e2e", {}).get("sustained"))
            )
            if not kept_up:
                steps.progress.console.log(f"saturated at {rate}/s: stopping this curve")
                steps.done(len(rates) - done - 1)
                return
            self._wait_idle()

    def _wait_idle(self) -> None:
        """Let the processor finish what it has before the next step (bounded)."""
        stack = self.target.stack
        if stack is None:
            return
        deadline = time.monotonic() + self.plan.idle_wait_s
        while time.monotonic() < deadline:
            try:
                text = httpx.get(f"{stack.processor_url}/metrics", timeout=2).text
            except httpx.HTTPError:
                return
            if metric_value(text, "processor_orders_in_flight") == 0:
                return
            time.sleep(0.2)

    def reads(self, steps: Steps) -> None:
        plan = self.plan
        steps.now("reads: GET /api/orders/{id}")
        if self.order_ids:
            self.guarded(
                "reads by id",
                lambda: run_wrk(
                    self.target.query_url, get_ids_script("/api/orders/", self.order_ids), plan.wrk_s
                ),
                ("reads", "by_id"),
            )
        else:
            self.results["reads"]["by_id"] = {"skipped": "no orders were placed"}
        steps.done()
        steps.now("reads: GET /api/orders?limit=20")
        self.guarded(
            "reads list",
            lambda: run_wrk(f"{self.target.query_url}/api/orders?limit=20", get_script(), plan.wrk_s),
            ("reads", "list"),
        )
        steps.done()

    def ingest(self, steps: Steps) -> None:
        steps.now("ingest: POST /api/orders at saturation (wrk)")
        self.guarded(
            "ingest saturation",
            lambda: run_wrk(f"{self.target.api_url}/api/orders", post_script(ORDER_JSON), self.plan.wrk_s),
            ("ingest", "saturation"),
        )
        steps.done()
        steps.now(f"bulk ingest: POST /api/orders/batch, {self.plan.batch_size} orders a request")
        self.guarded("bulk ingest", self._bulk, ("bulk",))
        steps.done()

    def auth(self, steps: Steps) -> None:
        steps.now("access control: POST and GET by id, AUTH_MODE=none then oidc (wrk)")
        stack, ids = self.target.stack, self.order_ids or _fake_ids()
        assert stack is not None
        self.guarded("auth cost", lambda: auth_cost(stack, ids, self.plan.wrk_s, self.logs.parent), ("auth",))
        steps.done()

    def _bulk(self) -> dict[str, Any]:
        url = f"{self.target.api_url}/api/orders/batch"
        probe = httpx.post(
            url, content='{"orders":[' + ORDER_JSON + "]}", headers={"Content-Type": "application/json"}
        )
        if probe.status_code in (404, 405):
            return {"skipped": f"POST /api/orders/batch answered {probe.status_code} (not merged yet)"}
        if probe.status_code != 202:
            raise RuntimeError(f"POST /api/orders/batch answered {probe.status_code}: {probe.text[:300]}")
        size = self.plan.batch_size
        body = '{"orders":[' + ",".join([ORDER_JSON] * size) + "]}"
        result = run_wrk(url, post_script(body), self.plan.wrk_s, connections=8, timeout_s=10)
        result["batch_size"] = size
        result["orders_per_s"] = round(result["ok_rps"] * size, 1)
        return result

    def restart_with_delay(self, delay_ms: int, steps: Steps) -> list[str]:
        """api and processor on a fresh topic and group; a backlog preloaded before the processor starts."""
        stack = self.target.stack
        assert stack is not None
        steps.now(f"restarting api and processor with PROCESSING_DELAY_MS={delay_ms} on a fresh topic")
        for key in ("processor", "api"):
            stack.procs.pop(key).stop()
        run = uuid.uuid4().hex[:8]
        stack.env.update(
            KAFKA_ORDERS_TOPIC=f"bench-orders-{delay_ms}-{run}",
            KAFKA_DLQ_TOPIC=f"bench-orders-{delay_ms}-{run}.dlq",
            KAFKA_STATUS_TOPIC=f"bench-orders-{delay_ms}-{run}.status",
            KAFKA_CONSUMER_GROUP=f"bench-processor-{delay_ms}-{run}",
            PROCESSING_DELAY_MS=str(delay_ms),
        )
        self.target.processor_delay_ms = delay_ms
        ids = asyncio.run(
            preload(self.target.kafka_bootstrap, stack.env["KAFKA_ORDERS_TOPIC"], self.plan.preload)
        )
        stack.start_service("api")
        stack.wait_ready("api")
        return ids

    def tutorial(self, steps: Steps) -> None:
        steps.now("baseline: the tutorial's consumer, one order at a time, 200 ms each")

        def run() -> dict[str, Any]:
            topic = f"bench-tutorial-{uuid.uuid4().hex[:8]}"
            asyncio.run(preload(self.target.kafka_bootstrap, topic, 200))
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "orders_bench.tutorial",
                    self.target.kafka_bootstrap,
                    topic,
                    str(self.plan.tutorial_s),
                    "200",
                ],
                capture_output=True,
                text=True,
                timeout=self.plan.tutorial_s + 60,
            )
            if done.returncode != 0:
                raise RuntimeError(f"tutorial consumer failed: {done.stderr[-1000:]}")
            result: dict[str, Any] = json.loads(done.stdout)
            return result

        self.guarded("tutorial baseline", run, ("baseline", "tutorial"))
        steps.done()

    def drain(self, ids: list[str], steps: Steps) -> None:
        stack = self.target.stack
        assert stack is not None
        steps.now(f"baseline: our processor, 200 ms delay, draining {len(ids)} preloaded orders")

        def run() -> dict[str, Any]:
            return asyncio.run(self._drain(stack, ids, timeout=self.plan.drain_s))

        self.guarded("processor drain", run, ("baseline", "processor"))
        steps.done()

    async def _drain(self, stack: Stack, ids: list[str], timeout: float) -> dict[str, Any]:
        """Start the processor on the backlog and time it through the update stream's own timestamps."""
        wanted = set(ids)
        redis = Redis.from_url(self.target.redis_url, decode_responses=True)
        stream = UpdateStream(redis, Keys(self.target.key_prefix))
        first_processing: datetime | None = None
        last_completed: datetime | None = None
        completed = 0
        try:
            last = await stream.head()
            started = time.monotonic()
            await asyncio.to_thread(stack.start_service, "processor")
            deadline = started + timeout
            while completed < len(wanted) and time.monotonic() < deadline:
                for update in await stream.wait_updates(last, 5000, 500):
                    last = update.position
                    if update.order_id not in wanted or update.at is None:
                        continue
                    at = datetime.fromisoformat(update.at)
                    if update.status == OrderStatus.PROCESSING and (
                        first_processing is None or at < first_processing
                    ):
                        first_processing = at
                    elif update.status == OrderStatus.COMPLETED:
                        completed += 1
                        last_completed = max(at, last_completed or at)
            wall = time.monotonic() - started
        finally:
            await redis.aclose()
        await asyncio.to_thread(stack.wait_ready, "processor")
        span = (
            (last_completed - first_processing).total_seconds() if first_processing and last_completed else 0
        )
        return {
            "delay_ms": 200,
            "preloaded": len(wanted),
            "completed": completed,
            "seconds_first_processing_to_last_completed": round(span, 3),
            "wall_seconds_including_start": round(wall, 3),
            "completed_per_s": round(completed / span, 1) if span > 0 else None,
            "all_completed": completed == len(wanted),
        }

    def tracing(self, steps: Steps) -> None:
        """The same load with tracing off, at 10% and 100% sampling (tracing_cost.py)."""
        stack = self.target.stack
        assert stack is not None
        rate = self.plan.tracing_rate
        steps.now(f"tracing off, 10%, 100%: {rate} orders/s for {self.plan.curve_step_s:.0f}s each")

        def run() -> dict[str, Any]:
            step = partial(_loadgen, self._spec(f"{self.target.api_url}/api/orders", rate, e2e=True))
            return tracing_rows(stack, self.logs.parent / "tracing", step, self._wait_idle)

        try:
            self.results["curves"].update(run())
        except (RuntimeError, OSError, TimeoutError, subprocess.TimeoutExpired, httpx.HTTPError) as exc:
            self.errors.append(f"tracing rows: {exc}")
        steps.done()

    def run(self, progress: Progress) -> Results:
        plan = self.plan
        managed = self.target.managed
        total = (
            2 * len(plan.bare_workers)
            + len(plan.generator_check_rates)
            + 2
            + len(plan.rates)
            + 2
            + 2
            + (4 + len(plan.rates_200) if managed else 0)
        )
        steps = Steps(progress, total)
        self.ceilings(steps)
        self.curve(f"delay_{self.target.processor_delay_ms}" if managed else "external", plan.rates, steps)
        self._wait_idle()
        self.reads(steps)
        self.ingest(steps)
        if managed:
            self.auth(steps)  # before tracing, which leaves the api and processor traced for
            self.tracing(steps)  # the next phase's restart to undo
            ids = self.restart_with_delay(200, steps)
            self.tutorial(steps)
            self.drain(ids, steps)
            self.curve("delay_200", plan.rates_200, steps)
        self.results["errors"] = self.errors
        return self.results
