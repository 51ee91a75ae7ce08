"""The open-loop fixed-rate load generator, run as its own process.

`python -m orders_bench.loadgen` reads a `LoadSpec` as JSON on stdin, sends
requests on the schedule of `pacing.Schedule` with aiohttp on uvloop, and
prints one JSON result on stdout. With a feed it also times each order from
the POST's acknowledgment to COMPLETED seen on that feed (end to end).

The bench runs it in a separate process and reports its own CPU use and send
lag next to every figure, and runs it against the bare app too: an
achieved rate equal to the offered one there proves the generator was not the
bottleneck.
"""

import asyncio
import faulthandler
import json
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import orjson
import uvloop

from orders_web.serving import freeze_startup_heap

from .feeds import FeedKind, make_feed
from .pacing import Schedule
from .stats import percentile, summarize

__all__ = ["STUCK_EXIT", "LoadSpec", "bound_s", "run_load"]


@dataclass
class LoadSpec:
    url: str
    rate: float
    duration: float
    body: str | None = None
    """POST this JSON when set; GET otherwise."""
    connections: int = 256
    timeout: float = 10.0
    grace: float = 5.0
    """After the last request is sent, how long answers may still come."""
    feed: FeedKind | None = None
    redis_url: str = ""
    key_prefix: str = ""
    """The read model's REDIS_KEY_PREFIX: the redis feed reads its update stream."""
    redis_shards: int = 1
    """REDIS_SHARDS: the redis feed follows every shard's stream."""
    redis_cluster: bool = False
    query_url: str = ""
    completed_status: str = "COMPLETED"
    e2e_grace: float = 5.0
    """After the last answer, how long COMPLETED may still take to show."""
    keep_ids: int = 0
    """Return up to this many acknowledged order ids (for the read benchmarks)."""


@dataclass
class _Run:
    spec: LoadSpec
    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    acked: dict[str, float] = field(default_factory=dict)
    due: dict[str, float] = field(default_factory=dict)
    """When each acknowledged order's request was due (its scheduled send)."""
    seen: dict[str, float] = field(default_factory=dict)
    ok: int = 0
    last_ok: float = 0.0

    def on_update(self, order_id: str, status: str) -> None:
        if status == self.spec.completed_status and order_id not in self.seen:
            self.seen[order_id] = time.perf_counter()


async def _one(run: _Run, session: aiohttp.ClientSession, due: float, e2e: bool) -> None:
    spec = run.spec
    run.lags.append(time.perf_counter() - due)
    try:
        if spec.body is None:
            request = session.get(spec.url)
        else:
            request = session.post(spec.url, data=spec.body, headers={"Content-Type": "application/json"})
        async with request as resp:
            payload = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        run.errors[type(exc).__name__] += 1
        return
    end = time.perf_counter()
    run.statuses[status] += 1
    if 200 <= status < 300:
        run.ok += 1
        run.last_ok = end
        run.latencies.append(end - due)
        if e2e or len(run.acked) < spec.keep_ids:
            try:
                order_id = orjson.loads(payload)["data"]["orderId"]
                run.acked[order_id] = end
                run.due[order_id] = due
            except (orjson.JSONDecodeError, KeyError, TypeError):
                run.errors["bad answer"] += 1


async def run_load(spec: LoadSpec) -> dict[str, Any]:
    run = _Run(spec)
    e2e = spec.feed is not None
    feed_task: asyncio.Task[None] | None = None
    if spec.feed is not None:
        feed = make_feed(
            spec.feed,
            redis_url=spec.redis_url,
            key_prefix=spec.key_prefix,
            query_url=spec.query_url,
            redis_shards=spec.redis_shards,
            redis_cluster=spec.redis_cluster,
        )
        ready = asyncio.Event()
        feed_task = asyncio.create_task(feed.run(run.on_update, ready))
        done, _ = await asyncio.wait(
            [feed_task, asyncio.create_task(ready.wait())], timeout=10, return_when="FIRST_COMPLETED"
        )
        if feed_task in done:
            feed_task.result()  # raises why the feed stopped
        if not ready.is_set():
            raise TimeoutError("the update feed was not ready within 10s")
    connector = aiohttp.TCPConnector(limit=spec.connections, limit_per_host=spec.connections)
    timeout = aiohttp.ClientTimeout(total=spec.timeout)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            schedule = Schedule(spec.rate, spec.duration, time.perf_counter())
            pending: set[asyncio.Task[None]] = set()
            sent = 0
            while sent < schedule.total:
                due = schedule.due_by(time.perf_counter())
                while sent < due:
                    task = asyncio.create_task(_one(run, session, schedule.due_at(sent), e2e))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                    sent += 1
                await asyncio.sleep(schedule.next_wait(sent, time.perf_counter()))
            sending_ended = time.perf_counter()
            timed_out = 0
            if pending:
                _, late = await asyncio.wait(set(pending), timeout=spec.grace)
                timed_out = len(late)
                for task in late:
                    task.cancel()
                if late:
                    await asyncio.wait(late)
            if timed_out:
                run.errors["no answer within grace"] += timed_out
        if feed_task is not None:
            deadline = time.perf_counter() + spec.e2e_grace
            while time.perf_counter() < deadline and any(oid not in run.seen for oid in run.acked):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        if feed_task is not None:
            await _stop(feed_task)
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    start = schedule.start
    result: dict[str, Any] = {
        "spec": {k: v for k, v in asdict(spec).items() if k != "body"},
        "offered_rate": spec.rate,
        "sent": sent,
        "ok": run.ok,
        "non_2xx": sum(n for status, n in run.statuses.items() if not 200 <= status < 300),
        "statuses": {str(k): v for k, v in sorted(run.statuses.items())},
        "errors": dict(run.errors),
        "achieved_rate": round(run.ok / max(spec.duration, run.last_ok - start), 1) if run.ok else 0.0,
        "latency_ms": summarize(run.latencies),
        "send_lag_ms": {
            "p50": round(percentile(run.lags, 50) * 1000, 3) if run.lags else None,
            "p99": round(percentile(run.lags, 99) * 1000, 3) if run.lags else None,
        },
        "sending_s": round(sending_ended - start, 3),
        "generator_cpu_percent": round(100 * cpu / wall, 1) if wall else None,
    }
    if e2e:
        result["e2e"] = _e2e(run, start, spec.duration)
    if spec.keep_ids:
        result["order_ids"] = list(run.acked)[: spec.keep_ids]
    return result


async def _stop(task: "asyncio.Task[None]", tries: int = 20) -> None:
    """Cancel `task` until it ends, a bounded number of times. Once was seen not to be
    enough: under the heaviest load steps the watchdog found the feed still in its XREAD after the
    cancellation (cause not pinned down), and the run waited on it until killed."""
    for _ in range(tries):
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=0.5)
        if done:
            break
    if not task.done():
        sys.stderr.write(f"the feed did not end after {tries} cancellations; left behind\n")
    elif not task.cancelled() and task.exception() is not None:
        sys.stderr.write(f"the feed ended with {task.exception()!r}\n")


def _e2e(run: _Run, start: float, duration: float) -> dict[str, Any]:
    """Ack-to-COMPLETED times (and scheduled-send-to-COMPLETED ones), how many never showed,
    and whether a backlog grew."""
    pairs = sorted((ack, run.seen[oid]) for oid, ack in run.acked.items() if oid in run.seen)
    sent_seen = sorted(
        (run.due[oid], run.seen[oid]) for oid in run.acked if oid in run.seen and oid in run.due
    )
    from_due = [seen - due for due, seen in sent_seen]
    n = len(from_due) // 3
    before_ack = sum(1 for ack, seen in pairs if seen < ack)
    times = [max(0.0, seen - ack) for ack, seen in pairs]
    missing = len(run.acked) - len(pairs)
    last_seen = max((seen for _, seen in pairs), default=start)
    third = len(times) // 3
    early = percentile(times[:third], 50) * 1000 if third else None
    late = percentile(times[-third:], 50) * 1000 if third else None
    # A backlog that grows shows as later orders waiting longer than earlier ones.
    growing = missing > 0 or (early is not None and late is not None and late > 1.5 * early + 20)
    return {
        "acked": len(run.acked),
        "completed": len(pairs),
        "missing": missing,
        "completed_before_ack_seen": before_ack,
        "latency_ms": summarize(times),
        "from_send_due_ms": summarize(from_due),
        # The same by when each was sent: a backlog anywhere (the api's too) makes the last third wait longer.
        "from_send_p50_thirds_ms": [
            round(percentile(part, 50) * 1000, 3) for part in (from_due[:n], from_due[-n:])
        ]
        if n
        else None,
        "completion_rate": round(len(pairs) / max(duration, last_seen - start), 1) if pairs else 0.0,
        "p50_first_third_ms": round(early, 3) if early is not None else None,
        "p50_last_third_ms": round(late, 3) if late is not None else None,
        "sustained": not growing,
    }


def bound_s(spec: LoadSpec) -> float:
    """How long a run may take at most: the runner kills the generator after that."""
    return spec.duration + spec.grace + spec.e2e_grace + 30


STUCK_EXIT = 3
"""The generator's exit status when its watchdog found it still running near the bound."""


def _awaiting(task: "asyncio.Task[Any]") -> str:
    """Where a task waits: its coroutine chain, outermost first (Task.print_stack shows only the top)."""
    frames = []
    coro: Any = task.get_coro()
    while coro is not None and getattr(coro, "cr_frame", None) is not None:
        frame = coro.cr_frame
        frames.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        coro = coro.cr_await
    return f"{task.get_name()}: " + " -> ".join(frames or [repr(coro)])


async def _watchdog(after: float) -> None:
    """Say where a run that overstays its bound is waiting, then end it (exit STUCK_EXIT)."""
    await asyncio.sleep(after)
    faulthandler.cancel_dump_traceback_later()  # the loop runs: its tasks tell more than threads
    tasks = [_awaiting(t) for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    sys.stderr.write("still running; tasks wait in:\n" + "\n".join(tasks[:20]) + "\n")
    sys.stderr.flush()
    os._exit(STUCK_EXIT)


async def _run_watched(spec: LoadSpec) -> dict[str, Any]:
    watchdog = asyncio.create_task(_watchdog(bound_s(spec) - 8))
    try:
        return await run_load(spec)
    finally:
        watchdog.cancel()


def main() -> None:
    spec = LoadSpec(**json.loads(sys.stdin.read()))
    freeze_startup_heap()  # as the services do: fewer collector stalls in what it measures
    # A blocked event loop cannot run the watchdog: then the threads' stacks, and exit 1.
    faulthandler.dump_traceback_later(bound_s(spec) - 4, exit=True)
    loop = uvloop.new_event_loop()
    result = loop.run_until_complete(_run_watched(spec))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    # A one-shot process: no waiting at exit for a task that ignored its cancellation (see _stop).
    os._exit(0)


if __name__ == "__main__":
    main()
