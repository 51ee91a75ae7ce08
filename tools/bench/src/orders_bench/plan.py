"""What one bench run measures and how far: the plan of each mode, the target, the progress bar."""

import shutil
from dataclasses import dataclass

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from orders_stack import Stack

__all__ = ["Plan", "Steps", "Target", "check_tools", "progress_bar"]


@dataclass(frozen=True)
class Plan:
    """How long and how far each phase goes."""

    quick: bool
    curve_step_s: float
    wrk_s: float
    rates: tuple[int, ...]
    rates_200: tuple[int, ...]
    bare_workers: tuple[int, ...]
    generator_check_rates: tuple[int, ...]
    kafka_records: int
    redis_requests: int
    preload: int
    tutorial_s: float
    batch_size: int = 1000
    grace_s: float = 5.0
    e2e_grace_s: float = 5.0
    idle_wait_s: float = 30.0
    """Longest wait for the processor to finish its work before a latency step."""
    drain_s: float = 60.0
    """Longest wait for the processor to drain the preloaded backlog."""
    tracing_rate: int = 1000
    """Orders a second of the tracing off / 10% / 100% rows (kept up at every setting)."""

    @classmethod
    def make(cls, quick: bool, api_workers: int) -> "Plan":
        if quick:
            return cls(
                quick=True,
                curve_step_s=2,
                wrk_s=3,
                rates=(100, 500, 1000),
                rates_200=(500, 2000),
                bare_workers=(api_workers,),
                generator_check_rates=(1000,),
                kafka_records=50_000,
                redis_requests=20_000,
                preload=5_000,
                tutorial_s=3,
                grace_s=3,
                e2e_grace_s=3,
                idle_wait_s=10,
                drain_s=20,
                tracing_rate=500,
            )
        return cls(
            quick=False,
            curve_step_s=5,
            wrk_s=8,
            rates=(100, 250, 500, 1000, 2000, 3000, 4000, 6000, 8000),
            rates_200=(500, 1000, 2000, 3000, 4000, 6000),
            bare_workers=tuple(sorted({api_workers, 2})),
            generator_check_rates=(1000, 2000, 4000),
            kafka_records=300_000,
            redis_requests=100_000,
            preload=20_000,
            tutorial_s=8,
        )


@dataclass
class Target:
    """What to measure: a stack started here, or one given by URLs."""

    api_url: str = ""
    query_url: str = ""
    redis_url: str = ""
    kafka_bootstrap: str = ""
    key_prefix: str = ""
    stack: Stack | None = None
    processor_delay_ms: int | None = None

    @property
    def managed(self) -> bool:
        return self.stack is not None

    @property
    def redis_port(self) -> int | None:
        tail = self.redis_url.rsplit(":", 1)[-1].split("/")[0]
        return int(tail) if tail.isdigit() else None


def check_tools(java_only: bool = False) -> list[str]:
    """What the bench needs on the machine and lacks, each with how to get it (the capacity
    phase alone: Java, for Kafka)."""
    needs = {
        "wrk": "apt-get install wrk",
        "redis-benchmark": "apt-get install redis-tools",
        "java": "apt-get install openjdk-17-jre-headless",
    }
    if java_only:
        needs = {"java": needs["java"]}
    return [f"{tool} ({hint})" for tool, hint in needs.items() if shutil.which(tool) is None]


class Steps:
    """The progress bar: one tick per measurement."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.progress = progress
        self.task = progress.add_task("starting", total=total)

    def now(self, what: str) -> None:
        self.progress.update(self.task, description=what)
        self.progress.console.log(what)

    def done(self, count: int = 1) -> None:
        self.progress.advance(self.task, count)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
