"""The capacity model: from CPU per order, measured per component, to the instances a rate needs.

Pure (unit tested). For each component, instances = ceil(rate * CPU per order / budget), where
the budget is the CPU one instance may use (`Budgets`, the assumptions, stated in the report
and in docs/performance.md). The processors are also bounded by partitions: one partition is
read by one processor of the group, so the topic needs at least as many partitions as there are
processors.
"""

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from rich.table import Table

__all__ = ["MODEL_RATES", "Budgets", "capacity_tables", "model", "plan_for"]

MODEL_RATES = (10_000, 100_000)


@dataclass(frozen=True)
class Budgets:
    """What one instance of each component may use, in cores: the model's assumptions."""

    python_process: float = 0.7
    """An api worker, a processor, a query instance: one Python process uses at most one core
    (the GIL, one event loop); 0.7 leaves headroom for bursts, collector pauses and rebalances."""
    redis_master: float = 0.7
    """A Redis master's main thread (commands and Functions run on one thread): 0.7 of a core."""
    broker_cores: int = 8
    broker_utilisation: float = 0.7
    """A broker on a machine of `broker_cores` cores, run at 70% of them."""
    min_brokers: int = 3
    """Replication factor 3 (min.insync.replicas 2) needs three brokers at least."""
    min_masters: int = 3
    """The cluster profile's shards (REDIS_SHARDS=3): fewer masters would not spread them."""

    @property
    def broker(self) -> float:
        return self.broker_cores * self.broker_utilisation


def _ceil(cores: float, budget: float, minimum: int = 1) -> int:
    return max(minimum, math.ceil(round(cores / budget, 9)))


def plan_for(rate: float, us_per_order: Mapping[str, float], budgets: Budgets) -> dict[str, Any]:
    """Instances of each component for `rate` orders a second; `us_per_order` by component
    (api, processor, query, kafka, and redis_masters or else redis), CPU microseconds an order."""
    rows: dict[str, Any] = {}
    per_instance = {
        "api": (budgets.python_process, 1),
        "processor": (budgets.python_process, 1),
        "query": (budgets.python_process, 1),
        "kafka": (budgets.broker, budgets.min_brokers),
        "redis": (budgets.redis_master, budgets.min_masters),
    }
    for name, (budget, minimum) in per_instance.items():
        us = us_per_order.get("redis_masters", us_per_order.get("redis")) if name == "redis" else None
        us = us if us is not None else us_per_order.get(name)
        if us is None:
            continue
        cores = rate * us / 1e6
        rows[name] = {
            "us_per_order": round(us, 1),
            "cores": round(cores, 2),
            "budget_cores": budget,
            "instances": _ceil(cores, budget, minimum),
        }
    if "processor" in rows:
        rows["processor"]["partitions"] = rows["processor"]["instances"]
    return rows


def model(
    us_per_order: Mapping[str, float],
    rates: tuple[int, ...] = MODEL_RATES,
    budgets: Budgets | None = None,
    source: str = "",
) -> dict[str, Any]:
    """The model for each rate, with the budgets it assumed and the run its figures came from."""
    budgets = budgets or Budgets()
    return {
        "source": source,
        "budgets": asdict(budgets),
        "us_per_order": {k: round(v, 1) for k, v in us_per_order.items()},
        "rates": {str(rate): plan_for(rate, us_per_order, budgets) for rate in rates},
    }


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def capacity_tables(capacity: Mapping[str, Any]) -> list[Table]:
    """The terminal summary: what each profile measured, then the model."""
    tables: list[Table] = []
    measured = Table(title="Capacity: CPU us an order (idle subtracted), fixed rate; end to end from send")
    columns = ("profile", "rate/s", "completed", "api", "processor", "query", "kafka", "redis", "total")
    for column in (*columns, "e2e p50 ms", "p99 ms", "kept up"):
        measured.add_column(column, justify="left" if column == "profile" else "right")
    for name, run in (capacity.get("profiles") or {}).items():
        if "error" in run:
            measured.add_row(name, *["-"] * (len(columns) + 1), "-", f"failed: {run['error'][:60]}")
            continue
        us = run.get("us_per_order") or {}
        lat = run.get("e2e_from_send_ms") or {}
        measured.add_row(
            name,
            _num(run.get("rate")),
            f"{run.get('completed')}/{run.get('acked')}",
            *(_num(us.get(c)) for c in ("api", "processor", "query", "kafka", "redis", "total")),
            _num(lat.get("p50"), 1),
            _num(lat.get("p99"), 1),
            "yes" if run.get("kept_up") else "no",
        )
    tables.append(measured)
    fitted = capacity.get("model") or {}
    if fitted.get("rates"):
        table = Table(title=f"Capacity model: instances (cores needed) from {fitted.get('source')}")
        table.add_column("component")
        for rate in fitted["rates"]:
            table.add_column(f"{int(rate):,} orders/s", justify="right")
        names = {"kafka": "Kafka brokers", "redis": "Redis masters", "processor": "processors"}
        first = next(iter(fitted["rates"].values()))
        for comp in first:
            cells = []
            for rows in fitted["rates"].values():
                row = rows[comp]
                extra = f", {row['partitions']} partitions" if "partitions" in row else ""
                cells.append(f"{row['instances']} ({row['cores']:.1f} cores{extra})")
            table.add_row(names.get(comp, comp), *cells)
        tables.append(table)
    return tables
