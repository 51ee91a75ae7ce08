"""The capacity phase: CPU per order of each component, on the single-node stack and on the
cluster profile, at one fixed rate that both keep up with on two cores.

Each profile gets a stack of its own (started here, stopped at the end whatever happens):

- `single`: what `make bench` runs: one broker, one Redis, one processor, one query instance
  (two uvicorn workers), one api worker;
- `cluster`: three brokers (replication factor 3), a Redis Cluster of six (three masters with a
  replica each, REDIS_WAIT_REPLICAS=1), three processors, two query instances; as
  tests/faults/test_cluster_profile.py starts it.

Both with PROCESSING_DELAY_MS=0. A short warm-up, then the CPU every component spends while idle
(over `idle_s`), then open-loop single-order POSTs at `rate` for `duration` s until every
acknowledged order is COMPLETED on the query service's live feed (SSE, which follows every
shard). CPU per order = (CPU in the window - idle CPU over the window) / orders completed.
"""

import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from orders_stack import Infra, Stack

from .capmodel import model
from .cpu import COMPONENTS, Sampler, cpu_delta
from .kafka_load import ORDER_JSON
from .loadgen import LoadSpec
from .plan import Steps
from .runner import _loadgen

__all__ = ["PROFILES", "CapacityPlan", "Profile", "capacity_model", "run_capacity"]


@dataclass(frozen=True)
class Profile:
    name: str
    kafka_brokers: int
    redis_cluster: bool
    processors: int
    query_instances: int
    query_workers: int
    kafka_heap: str


PROFILES = {
    "single": Profile("single", 1, False, 1, 1, 2, "512m"),
    "cluster": Profile("cluster", 3, True, 3, 2, 1, "384m"),
}


@dataclass(frozen=True)
class CapacityPlan:
    rate: int = 200
    """Kept up on the cluster profile on 2 cores (300/s was not: the api's answers queued)."""
    duration_s: float = 30.0
    warmup_s: float = 10.0
    idle_s: float = 10.0
    """Idle CPU is measured over this long before the load and again after it."""
    settle_s: float = 5.0
    e2e_grace_s: float = 60.0

    @classmethod
    def make(cls, quick: bool, rate: int | None = None) -> "CapacityPlan":
        base = cls(duration_s=10.0, warmup_s=3.0, idle_s=5.0, settle_s=3.0) if quick else cls()
        return replace(base, rate=rate) if rate else base


def component_pids(infra: Infra, stack: Stack) -> dict[str, list[int]]:
    """The root pid of each component's processes (their trees are summed by the sampler)."""
    procs = stack.procs
    roots = {name: [p.pid for key, p in procs.items() if key.split("-")[0] == name] for name in COMPONENTS}
    roots["kafka"] = [p.pid for p in infra.kafkas.values()]
    if infra.redis_cluster:
        masters = set(infra.redis_masters())
        nodes = [n for n in infra.redis_nodes if n.proc is not None]
        roots["redis"] = [n.proc.pid for n in nodes if n.proc is not None]
        roots["redis_masters"] = [n.proc.pid for n in nodes if n.proc is not None and n.port in masters]
    else:
        roots["redis"] = roots["redis_masters"] = [infra.redis.pid]
    return roots


def per_order(
    window: Mapping[str, float], idle_per_s: Mapping[str, float], wall_s: float, completed: int
) -> dict[str, float]:
    """CPU microseconds an order for each component: the window's CPU less what the component
    spends idle over as long, over the orders completed; `total` is the five components' sum."""
    if completed <= 0:
        return {}
    us = {
        name: max(0.0, window[name] - idle_per_s.get(name, 0.0) * wall_s) / completed * 1e6 for name in window
    }
    us["total"] = sum(us[name] for name in COMPONENTS if name in us)
    return {name: round(value, 1) for name, value in us.items()}


def _idle(sampler: Sampler, seconds: float) -> dict[str, float]:
    """Cores each component uses with no load, over `seconds`."""
    first, t0 = sampler.sample(), time.monotonic()
    time.sleep(seconds)
    spent = cpu_delta(first, sampler.sample())
    return {name: cpu / (time.monotonic() - t0) for name, cpu in spent.items()}


def _kept_up(result: Mapping[str, Any], rate: float) -> bool:
    """Every order acknowledged and completed at the offered rate, and no backlog growing
    anywhere: the last third of the orders, by when they were sent, took no longer from their
    send to COMPLETED than the first third (within 1.5x + 20 ms)."""
    e2e = result.get("e2e") or {}
    thirds: list[float] = e2e.get("from_send_p50_thirds_ms") or []
    growing = bool(thirds) and thirds[1] > 1.5 * thirds[0] + 20
    return (
        not growing
        and not e2e.get("missing")
        and not result.get("non_2xx")
        and result.get("achieved_rate", 0) >= 0.95 * rate
    )


def _env(profile: Profile, run: str) -> dict[str, str]:
    return {
        "KAFKA_ORDERS_TOPIC": f"capacity-orders-{run}",
        "KAFKA_DLQ_TOPIC": f"capacity-orders-{run}.dlq",
        "KAFKA_STATUS_TOPIC": f"capacity-orders-{run}.status",
        "KAFKA_CONSUMER_GROUP": f"capacity-processor-{run}",
        "REDIS_KEY_PREFIX": "",
        "PROCESSING_DELAY_MS": "0",
        "LOG_LEVEL": "WARNING",
        "BIND_HOST": "127.0.0.1",
        "API_WORKERS": "1",
        "QUERY_WORKERS": str(profile.query_workers),
    }


def _spec(stack: Stack, infra: Infra, rate: float, duration: float, e2e_grace: float) -> LoadSpec:
    return LoadSpec(
        url=f"{stack.api_url}/api/orders",
        rate=rate,
        duration=duration,
        body=ORDER_JSON,
        feed="sse",
        redis_url=infra.redis_url,
        redis_shards=int(infra.redis_env.get("REDIS_SHARDS", "1")),
        redis_cluster=infra.redis_cluster,
        query_url=stack.query_url,
        e2e_grace=e2e_grace,
    )


def run_profile(profile: Profile, plan: CapacityPlan, data_dir: Path, steps: Steps) -> dict[str, Any]:
    """Start the profile's stack, measure, stop it."""
    shutil.rmtree(data_dir, ignore_errors=True)
    steps.now(f"capacity, {profile.name}: starting its Kafka, Redis and services")
    with (
        Infra(
            data_dir,
            kafka_port=0,
            redis_port=0,
            kafka_brokers=profile.kafka_brokers,
            kafka_heap=profile.kafka_heap,
            redis_cluster=profile.redis_cluster,
        ) as infra,
        Stack(
            infra,
            api_port=0,
            query_port=0,
            processor_port=0,
            env=_env(profile, f"{profile.name}-{int(time.time())}"),
            processors=profile.processors,
            query_instances=profile.query_instances,
        ) as stack,
    ):
        steps.done()
        roots = component_pids(infra, stack)
        sampler = Sampler(roots)
        steps.now(f"capacity, {profile.name}: warm-up, then {plan.idle_s:.0f}s idle")
        _loadgen(_spec(stack, infra, plan.rate, plan.warmup_s, plan.e2e_grace_s))
        time.sleep(plan.settle_s)
        idle_before = _idle(sampler, plan.idle_s)
        steps.done()
        steps.now(f"capacity, {profile.name}: {plan.rate} orders/s for {plan.duration_s:.0f}s")
        before, t1 = sampler.sample(), time.monotonic()
        result = _loadgen(_spec(stack, infra, plan.rate, plan.duration_s, plan.e2e_grace_s))
        window = cpu_delta(before, sampler.sample())
        wall = time.monotonic() - t1
        time.sleep(plan.settle_s)
        idle_after = _idle(sampler, plan.idle_s)
        steps.done()
    # The lower of the two idle figures is subtracted: what is left is never less than the load's.
    idle_per_s = {name: min(idle_before[name], idle_after.get(name, 0.0)) for name in idle_before}
    e2e = result.get("e2e") or {}
    completed = int(e2e.get("completed") or 0)
    return {
        "profile": {
            "kafka_brokers": profile.kafka_brokers,
            "redis": "cluster of six, three masters" if profile.redis_cluster else "one server",
            "processors": profile.processors,
            "query_instances": profile.query_instances,
            "query_workers": profile.query_workers,
            "api_workers": 1,
            "processes_per_component": {name: len(pids) for name, pids in roots.items()},
        },
        "rate": plan.rate,
        "duration_s": plan.duration_s,
        "acked": int(e2e.get("acked") or 0),
        "completed": completed,
        "missing": int(e2e.get("missing") or 0),
        "achieved_rate": result.get("achieved_rate"),
        "non_2xx": result.get("non_2xx"),
        "kept_up": _kept_up(result, plan.rate),
        "window_s": round(wall, 2),
        "cpu_s": {name: round(cpu, 3) for name, cpu in window.items()},
        "idle_cores_before": {name: round(value, 4) for name, value in idle_before.items()},
        "idle_cores_after": {name: round(value, 4) for name, value in idle_after.items()},
        "gross_us_per_order": per_order(window, {}, wall, completed),
        "us_per_order": per_order(window, idle_per_s, wall, completed),
        "e2e_from_send_ms": e2e.get("from_send_due_ms"),
        "e2e_from_ack_ms": e2e.get("latency_ms"),
        "ingest_latency_ms": result.get("latency_ms"),
        "generator_cpu_percent": result.get("generator_cpu_percent"),
    }


def capacity_model(profiles: Mapping[str, Any]) -> dict[str, Any]:
    """The model from the cluster run's figures (replication included), else the single node's."""
    for name in ("cluster", "single"):
        us = (profiles.get(name) or {}).get("us_per_order")
        if us:
            return model(us, source=f"the {name} profile's run")
    return {}


def run_capacity(
    plan: CapacityPlan, data_dir: Path, steps: Steps, names: tuple[str, ...] = ("single", "cluster")
) -> dict[str, Any]:
    """Each profile in turn; a profile that fails is recorded as such and the next one runs."""
    profiles: dict[str, Any] = {}
    for name in names:
        try:
            profiles[name] = run_profile(PROFILES[name], plan, data_dir / f"capacity-{name}", steps)
        except (RuntimeError, OSError, TimeoutError, ValueError) as exc:
            profiles[name] = {"error": str(exc)}
    return {"plan": asdict(plan), "profiles": profiles, "model": capacity_model(profiles)}
