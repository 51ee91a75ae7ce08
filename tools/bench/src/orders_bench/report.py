"""From the raw measurements to the report: figures as ratios of their ceilings, targets met or not.

`build_report` is pure (unit tested); `write_charts` draws the PNGs with
matplotlib's Agg backend and `summary_tables` renders the terminal summary.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

from rich.table import Table

from .capmodel import capacity_tables
from .stats import ratio

__all__ = ["Figure", "Target", "build_report", "summary_tables", "write_charts"]

STORE_ROUND_TRIPS_PER_ORDER = 2
"""The processor's Redis round trips per order: create-if-need-be with PROCESSING (one script),
then COMPLETED."""


class Figure(TypedDict):
    name: str
    value: float | None
    unit: str
    ceiling_name: str | None
    ceiling: float | None
    ratio: float | None


class Target(TypedDict):
    name: str
    measured: str
    met: bool | None
    """None when it could not be measured in this run (the reason is in `measured`)."""


def _get(data: Any, *path: str | int) -> Any:
    """data[p0][p1]...; None as soon as a step is missing."""
    cur: Any = data
    for step in path:
        try:
            cur = cur[step]
        except (KeyError, IndexError, TypeError):
            return None
    return cur


def _best(configs: Sequence[Mapping[str, Any]], route: str) -> tuple[float | None, str | None]:
    """The best bare configuration for one route: (requests/s, which configuration)."""
    best: tuple[float | None, str | None] = (None, None)
    for config in configs:
        rps = _get(config, route, "ok_rps")
        if rps is not None and (best[0] is None or rps > best[0]):
            best = (rps, f"bare FastAPI, {config.get('workers')} worker(s)")
    return best


def _at_rate(curve: Sequence[Mapping[str, Any]], rate: float) -> Mapping[str, Any] | None:
    return next((step for step in curve if step.get("offered_rate") == rate), None)


def _max_sustained(curve: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The highest-rate step that kept up: achieved ~ offered, all completed, no growing backlog."""
    good = [
        step
        for step in curve
        if _get(step, "e2e", "sustained")
        and step.get("achieved_rate", 0) >= 0.95 * step.get("offered_rate", 0)
        and not step.get("non_2xx")
    ]
    return max(good, key=lambda step: step["offered_rate"], default=None)


def _fig(
    name: str, value: float | None, unit: str, ceiling_name: str | None, ceiling: float | None
) -> Figure:
    return Figure(
        name=name,
        value=value,
        unit=unit,
        ceiling_name=ceiling_name,
        ceiling=ceiling,
        ratio=ratio(value, ceiling),
    )


def build_report(results: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The whole report: the measurements as they came, plus figures and targets."""
    curve0 = _get(results, "curves", "delay_0") or []
    curve200 = _get(results, "curves", "delay_200") or []
    drain = _get(results, "baseline", "processor", "completed_per_s")
    figures = _figures(results, curve0, curve200, drain)
    return {
        "meta": dict(meta),
        "figures": figures,
        "targets": _targets(results, figures, curve0, curve200, drain),
        "capacity": results.get("capacity"),
        "results": {k: v for k, v in results.items() if k != "capacity"},
    }


def _figures(
    results: Mapping[str, Any], curve0: list[Any], curve200: list[Any], drain: float | None
) -> list[Figure]:
    """Each measured figure beside the ceiling it is held to."""
    bare = _get(results, "ceilings", "bare") or []
    post_ceiling, post_cfg = _best(bare, "post")
    get_ceiling, get_cfg = _best(bare, "get_id")
    list_ceiling, list_cfg = _best(bare, "get_list")
    kafka_ceiling = _get(results, "ceilings", "kafka", "records_per_s")
    redis_get = _get(results, "ceilings", "redis", "rps", "GET")
    redis_ops = _get(results, "ceilings", "redis", "rps") or {}
    store_orders = (
        min(redis_ops.values()) / STORE_ROUND_TRIPS_PER_ORDER
        if isinstance(redis_ops, dict) and redis_ops
        else None
    )
    ingest = _get(results, "ingest", "saturation")
    by_id = _get(results, "reads", "by_id")
    listing = _get(results, "reads", "list")
    bulk = _get(results, "bulk")
    tutorial = _get(results, "baseline", "tutorial", "completed_per_s")
    best0 = _max_sustained(curve0)
    best200 = _max_sustained(curve200)

    return [
        _fig(
            "ingest POST /api/orders, saturation", _get(ingest, "ok_rps"), "orders/s", post_cfg, post_ceiling
        ),
        _fig(
            "bulk POST /api/orders/batch",
            _get(bulk, "orders_per_s"),
            "orders/s",
            "Kafka ProducerPerformance",
            kafka_ceiling,
        ),
        _fig("read GET /api/orders/{id}", _get(by_id, "ok_rps"), "req/s", get_cfg, get_ceiling),
        _fig(
            "read GET /api/orders/{id} vs the store",
            _get(by_id, "ok_rps"),
            "req/s",
            "redis-benchmark GET",
            redis_get,
        ),
        _fig("read GET /api/orders?limit=20", _get(listing, "ok_rps"), "req/s", list_cfg, list_ceiling),
        _fig(
            "end to end, delay 0: highest sustained rate",
            _get(best0, "e2e", "completion_rate"),
            "orders/s",
            post_cfg,
            post_ceiling,
        ),
        _fig(
            "end to end, delay 200 ms: highest sustained rate",
            _get(best200, "e2e", "completion_rate"),
            "orders/s",
            post_cfg,
            post_ceiling,
        ),
        _fig(
            "processor, delay 200 ms, backlog drain",
            drain,
            "orders/s",
            f"store: slowest redis-benchmark op / {STORE_ROUND_TRIPS_PER_ORDER} round trips",
            store_orders,
        ),
        _fig(
            "processor, delay 200 ms, vs the tutorial's design",
            drain,
            "orders/s",
            "tutorial consumer (one at a time)",
            tutorial,
        ),
        *_reference_figures(results),
    ]


def _reference_figures(results: Mapping[str, Any]) -> list[Figure]:
    """Access control's cost, back to back, and the machine's ceilings on their own."""
    bare = _get(results, "ceilings", "bare") or []
    post_ceiling, _ = _best(bare, "post")
    get_ceiling, _ = _best(bare, "get_id")
    kafka_ceiling = _get(results, "ceilings", "kafka", "records_per_s")
    redis_get = _get(results, "ceilings", "redis", "rps", "GET")
    return [
        _fig(
            "AUTH_MODE=oidc: POST /api/orders, saturation",
            _get(results, "auth", "oidc", "post", "ok_rps"),
            "orders/s",
            "AUTH_MODE=none, back to back",
            _get(results, "auth", "none", "post", "ok_rps"),
        ),
        _fig(
            "AUTH_MODE=oidc: GET /api/orders/{id}",
            _get(results, "auth", "oidc", "get_id", "ok_rps"),
            "req/s",
            "AUTH_MODE=none, back to back",
            _get(results, "auth", "none", "get_id", "ok_rps"),
        ),
        _fig("Kafka ProducerPerformance (ceiling)", kafka_ceiling, "records/s", None, None),
        _fig("bare FastAPI POST (ceiling)", post_ceiling, "req/s", None, None),
        _fig("bare FastAPI GET (ceiling)", get_ceiling, "req/s", None, None),
        _fig("redis-benchmark GET (ceiling)", redis_get, "ops/s", None, None),
    ]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _targets(
    results: Mapping[str, Any],
    figures: Sequence[Figure],
    curve0: Sequence[Mapping[str, Any]],
    curve200: Sequence[Mapping[str, Any]],
    drain: float | None,
) -> list[Target]:
    by_name = {f["name"]: f for f in figures}
    targets: list[Target] = []

    ingest = _get(results, "ingest", "saturation")
    r = by_name["ingest POST /api/orders, saturation"]["ratio"]
    bad = (_get(ingest, "non_2xx") or 0) + (_get(ingest, "socket_errors") or 0) if ingest else None
    targets.append(
        Target(
            name="ingest >= 90% of the bare FastAPI POST ceiling, no non-2xx",
            measured=f"{_pct(r)}, {bad} non-2xx or socket errors" if r is not None else "not measured",
            met=None if r is None else (r >= 0.9 and bad == 0),
        )
    )

    r_id = by_name["read GET /api/orders/{id}"]["ratio"]
    r_list = by_name["read GET /api/orders?limit=20"]["ratio"]
    targets.append(
        Target(
            name="reads >= 90% of the bare FastAPI GET ceiling",
            measured=f"by id {_pct(r_id)}, list {_pct(r_list)}",
            met=None if r_id is None or r_list is None else (r_id >= 0.9 and r_list >= 0.9),
        )
    )

    step = _at_rate(curve0, 500)
    p99 = _get(step, "e2e", "latency_ms", "p99") if step else None
    sustained = bool(_get(step, "e2e", "sustained")) if step else False
    targets.append(
        Target(
            name="end to end, delay 0, 500 orders/s: p99 < 30 ms, no growing backlog",
            measured=f"p99 {p99} ms, {'sustained' if sustained else 'backlog grew'}"
            if p99 is not None
            else "not measured",
            met=None if p99 is None else (p99 < 30 and sustained),
        )
    )

    step = _at_rate(curve200, 2000)
    drained = _get(results, "baseline", "processor") or {}
    at2000 = (
        f"; at 2000/s offered: {_get(step, 'e2e', 'completion_rate')}/s completed, "
        f"{'sustained' if _get(step, 'e2e', 'sustained') else 'backlog grew'}"
        if step
        else ""
    )
    all_done = bool(drained.get("all_completed"))
    measured = (
        f"backlog drained at {drain}/s ({drained.get('completed')} of {drained.get('preloaded')} completed"
        f"{'' if all_done else ' before the time limit'}){at2000}"
    )
    targets.append(
        Target(
            name="delay 200 ms: >= 2,000 orders/s completed through one processor, no growing backlog",
            measured=measured if drain is not None else "not measured",
            met=None
            if drain is None
            else (drain >= 2000 and all_done and (step is None or bool(_get(step, "e2e", "sustained")))),
        )
    )

    bulk = _get(results, "bulk")
    r = by_name["bulk POST /api/orders/batch"]["ratio"]
    skipped = _get(bulk, "skipped")
    targets.append(
        Target(
            name="bulk ingest >= 50% of Kafka's ProducerPerformance ceiling",
            measured=f"skipped: {skipped}" if skipped else _pct(r),
            met=None if r is None else r >= 0.5,
        )
    )
    return targets


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


def summary_tables(report: Mapping[str, Any]) -> list[Table]:
    capacity = capacity_tables(report["capacity"]) if report.get("capacity") else []
    if report["meta"].get("mode") == "capacity":
        return capacity
    return [*_main_tables(report), *capacity]


def _main_tables(report: Mapping[str, Any]) -> list[Table]:
    figures = Table(title="Figures (ratio = value / ceiling, same run, same machine)")
    for column in ("figure", "value", "unit", "ceiling", "ratio"):
        figures.add_column(column, justify="right" if column in ("value", "ratio") else "left")
    for f in report["figures"]:
        ceiling = f"{_fmt(f['ceiling'])} ({f['ceiling_name']})" if f["ceiling_name"] else ""
        figures.add_row(
            f["name"], _fmt(f["value"]), f["unit"], ceiling, _pct(f["ratio"]) if f["ratio"] else ""
        )

    curves = Table(title="Load curve: offered rate -> achieved, ingest and end-to-end latency (ms)")
    for column in (
        "delay",
        "offered/s",
        "acked/s",
        "ingest p50",
        "p99",
        "completed/s",
        "e2e p50",
        "p95",
        "p99",
        "kept up",
    ):
        curves.add_column(column, justify="right")
    for delay, steps in (report["results"].get("curves") or {}).items():
        for step in steps:
            e2e = step.get("e2e") or {}
            lat = e2e.get("latency_ms") or {}
            curves.add_row(
                delay.removeprefix("delay_") + " ms" if delay.startswith("delay_") else delay,
                _fmt(step["offered_rate"]),
                _fmt(step["achieved_rate"]),
                _fmt(step["latency_ms"]["p50"]),
                _fmt(step["latency_ms"]["p99"]),
                _fmt(e2e.get("completion_rate")),
                _fmt(lat.get("p50")),
                _fmt(lat.get("p95")),
                _fmt(lat.get("p99")),
                "yes" if e2e.get("sustained") else "no",
            )

    targets = Table(title="Targets")
    targets.add_column("target")
    targets.add_column("measured")
    targets.add_column("met")
    for t in report["targets"]:
        met = "n/a" if t["met"] is None else ("[green]met[/]" if t["met"] else "[red]not met[/]")
        targets.add_row(t["name"], t["measured"], met)
    return [figures, curves, targets]


def write_charts(report: Mapping[str, Any], folder: Path) -> list[Path]:
    """load_curve.png (latency and throughput against offered rate) and ratios.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    results = report["results"]
    curves: dict[str, list[dict[str, Any]]] = results.get("curves") or {}

    fig, (lat_ax, rate_ax) = plt.subplots(2, 1, figsize=(9, 9), sharex=True)
    for delay, steps in curves.items():
        if not steps:
            continue
        label = delay.replace("delay_", "delay ") + (" ms" if delay.startswith("delay_") else "")
        xs = [s["offered_rate"] for s in steps]
        for pct, style in (("p50", "-"), ("p99", "--")):
            e2e = [_get(s, "e2e", "latency_ms", pct) for s in steps]
            lat_ax.plot(xs, e2e, style, marker="o", label=f"end to end {pct}, {label}")
        rate_ax.plot(
            xs, [_get(s, "e2e", "completion_rate") for s in steps], marker="o", label=f"completed/s, {label}"
        )
        if delay == "delay_0" or len(curves) == 1:
            for pct, style in (("p50", "-"), ("p99", "--")):
                lat_ax.plot(
                    xs, [s["latency_ms"][pct] for s in steps], style, marker="s", label=f"POST ack {pct}"
                )
            rate_ax.plot(xs, [s["achieved_rate"] for s in steps], marker="s", label="POST acked/s")
    check = results.get("generator_check") or []
    if check:
        rate_ax.plot(
            [s["offered_rate"] for s in check],
            [s["achieved_rate"] for s in check],
            ":",
            marker="^",
            label="generator vs bare app (acked/s)",
        )
    top = max([1.0] + [float(s["offered_rate"]) for steps in curves.values() for s in steps])
    rate_ax.plot([0, top], [0, top], color="grey", linewidth=0.8, label="offered = achieved")
    lat_ax.set_yscale("log")
    lat_ax.set_ylabel("latency (ms, log scale)")
    lat_ax.axhline(30, color="red", linewidth=0.8, linestyle=":", label="30 ms target (delay 0)")
    lat_ax.legend(fontsize=7)
    lat_ax.grid(True, which="both", alpha=0.3)
    rate_ax.set_xlabel("offered rate (orders/s, open loop)")
    rate_ax.set_ylabel("orders/s")
    rate_ax.legend(fontsize=7)
    rate_ax.grid(True, alpha=0.3)
    fig.suptitle(f"Load curve ({report['meta'].get('mode', '')} run, {report['meta'].get('started', '')})")
    fig.tight_layout()
    path = folder / "load_curve.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    written.append(path)

    rated = [f for f in report["figures"] if f["ratio"] is not None and "tutorial" not in f["name"]]
    if rated:
        fig, ax = plt.subplots(figsize=(9, 0.5 * len(rated) + 1.5))
        names = [f"{f['name']}\nvs {f['ceiling_name']}" for f in rated]
        values = [100 * f["ratio"] for f in rated]
        ax.barh(names, values, color=["tab:green" if v >= 90 else "tab:orange" for v in values])
        ax.axvline(100, color="grey", linewidth=0.8)
        ax.axvline(90, color="red", linewidth=0.8, linestyle=":")
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:.0f}%", va="center", fontsize=8)
        ax.set_xlabel("% of the ceiling measured in the same run")
        ax.tick_params(axis="y", labelsize=7)
        ax.invert_yaxis()
        fig.tight_layout()
        path = folder / "ratios.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written
