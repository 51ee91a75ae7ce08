"""One `make bench`: start Kafka, Redis and the stack (or take one by URLs), run the phases, stop
everything started here whatever happens."""

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.progress import Progress

from orders_stack import Infra, Stack
from orders_stack.stack import ROOT

from .capacity import PROFILES, CapacityPlan, run_capacity
from .feeds import FeedKind
from .plan import Plan, Steps, Target
from .runner import Bench, Results

__all__ = ["Options", "run_bench"]


@dataclass
class Options:
    quick: bool = False
    feed: FeedKind = "redis"
    out: Path = field(default_factory=lambda: ROOT / ".reports" / "bench")
    data_dir: Path = field(default_factory=lambda: ROOT / ".data" / "bench")
    api_url: str = ""
    query_url: str = ""
    redis_url: str = ""
    kafka_bootstrap: str = ""
    key_prefix: str = ""
    cluster: bool | None = None
    """The capacity phase on both profiles (single node, cluster): None, in the full run only."""
    capacity_only: bool = False
    """Only the capacity phase (`make bench-cluster`)."""
    capacity_rate: int | None = None
    """Orders a second of the capacity phase (None: CapacityPlan's)."""
    capacity_profiles: tuple[str, ...] = ("single", "cluster")

    @property
    def capacity(self) -> bool:
        if self.api_url:
            return False  # it starts stacks of its own; a stack given by URLs has none to start
        return self.capacity_only or (self.cluster if self.cluster is not None else not self.quick)


def run_bench(options: Options, progress: Progress) -> tuple[Results, dict[str, Any]]:
    """Measure everything; stop everything started here whatever happens."""
    api_workers = int(os.environ.get("API_WORKERS", "1"))
    plan = Plan.make(options.quick, api_workers)
    logs = options.data_dir / "logs"
    meta: dict[str, Any] = {
        "mode": "capacity" if options.capacity_only else ("quick" if options.quick else "full"),
        "speed": "quick" if options.quick else "full",
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "feed": options.feed,
        "plan": asdict(plan),
        "api_workers": api_workers,
        "query_workers": int(os.environ.get("QUERY_WORKERS", "1")),
        "git_commit": _git_commit(),
    }
    t0 = time.monotonic()
    results: Results = {"errors": []}
    if not options.capacity_only:
        results = _main_phases(options, progress, meta, plan, logs)
    if options.capacity:
        capacity = CapacityPlan.make(options.quick, options.capacity_rate)
        meta["capacity_plan"] = asdict(capacity)
        names = tuple(name for name in options.capacity_profiles if name in PROFILES)
        steps = Steps(progress, 3 * len(names))
        results["capacity"] = run_capacity(capacity, options.data_dir, steps, names)
        results["errors"] += [
            f"capacity, {name}: {run['error']}"
            for name, run in results["capacity"]["profiles"].items()
            if "error" in run
        ]
    meta["finished"] = datetime.now().astimezone().isoformat(timespec="seconds")
    meta["duration_s"] = round(time.monotonic() - t0, 1)
    meta["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return results, meta


def _main_phases(
    options: Options, progress: Progress, meta: dict[str, Any], plan: Plan, logs: Path
) -> Results:
    """Every phase but capacity, on the stack started here (or given by URLs)."""
    with contextlib.ExitStack() as cleanup:
        if options.api_url:
            target = Target(
                api_url=options.api_url.rstrip("/"),
                query_url=options.query_url.rstrip("/"),
                redis_url=options.redis_url,
                kafka_bootstrap=options.kafka_bootstrap,
                key_prefix=options.key_prefix,
            )
            meta["stack"] = "given by URLs"
        else:
            shutil.rmtree(options.data_dir, ignore_errors=True)
            progress.console.log("starting Kafka and Redis")
            infra = cleanup.enter_context(Infra(options.data_dir, kafka_port=0, redis_port=0))
            run = uuid.uuid4().hex[:8]
            env = {
                "KAFKA_ORDERS_TOPIC": f"bench-orders-0-{run}",
                "KAFKA_DLQ_TOPIC": f"bench-orders-0-{run}.dlq",
                "KAFKA_STATUS_TOPIC": f"bench-orders-0-{run}.status",
                "KAFKA_CONSUMER_GROUP": f"bench-processor-0-{run}",
                "REDIS_KEY_PREFIX": "",
                "PROCESSING_DELAY_MS": "0",
                "LOG_LEVEL": "WARNING",
                "BIND_HOST": "127.0.0.1",
                # Reads scale with processes on 2 cores (GET by id: 6.2k req/s with 1, 10.6k
                # with 2); ingest does not (the processor, Kafka and Redis share the cores).
                "QUERY_WORKERS": os.environ.get("QUERY_WORKERS", "2"),
                "API_WORKERS": os.environ.get("API_WORKERS", "1"),
            }
            meta["workers"] = {"query": env["QUERY_WORKERS"], "api": env["API_WORKERS"]}
            progress.console.log("starting api, processor and query")
            stack = cleanup.enter_context(Stack(infra, api_port=0, query_port=0, processor_port=0, env=env))
            target = Target(
                api_url=stack.api_url,
                query_url=stack.query_url,
                redis_url=infra.redis_url,
                kafka_bootstrap=infra.kafka_bootstrap,
                stack=stack,
                processor_delay_ms=0,
            )
            meta["stack"] = "started by the bench (orders_stack), logs in " + str(logs)
        return Bench(plan, target, options.feed, options.out, logs).run(progress)


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None
