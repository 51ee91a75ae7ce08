from pathlib import Path
from typing import Any

from rich.console import Console

from orders_bench.report import build_report, summary_tables, write_charts


def _wrk(ok_rps: float, non_2xx: int = 0) -> dict[str, Any]:
    return {"ok_rps": ok_rps, "non_2xx": non_2xx, "socket_errors": 0, "latency_ms": {"p99": 5.0}}


def _step(rate: float, achieved: float, e2e_p99: float, sustained: bool = True) -> dict[str, Any]:
    lat = {"count": 1, "mean": 1.0, "p50": 1.0, "p95": 2.0, "p99": e2e_p99, "max": e2e_p99}
    return {
        "offered_rate": rate,
        "achieved_rate": achieved,
        "non_2xx": 0,
        "latency_ms": lat,
        "e2e": {"latency_ms": lat, "completion_rate": achieved, "sustained": sustained},
    }


def _results() -> dict[str, Any]:
    return {
        "ceilings": {
            "bare": [
                {"workers": 1, "post": _wrk(5000), "get_id": _wrk(6000), "get_list": _wrk(6000)},
                {"workers": 2, "post": _wrk(8000), "get_id": _wrk(9000), "get_list": _wrk(9000)},
            ],
            "kafka": {"records_per_s": 30000.0},
            "redis": {"rps": {"GET": 60000.0, "XADD": 45000.0}},
        },
        "ingest": {"saturation": _wrk(7400)},
        "reads": {"by_id": _wrk(8500), "list": _wrk(4000)},
        "bulk": {"skipped": "POST /api/orders/batch answered 404 (not merged yet)"},
        "curves": {
            "delay_0": [_step(100, 100, 5), _step(500, 499, 25), _step(1000, 700, 900, sustained=False)],
            "delay_200": [_step(2000, 1990, 260)],
        },
        "baseline": {
            "tutorial": {"completed_per_s": 4.9},
            "processor": {
                "completed_per_s": 2450.0,
                "completed": 20000,
                "preloaded": 20000,
                "all_completed": True,
            },
        },
        "generator_check": [_step(1000, 1000, 2)],
    }


def test_ratios_use_the_best_bare_configuration() -> None:
    report = build_report(_results(), {"mode": "quick"})
    figures = {f["name"]: f for f in report["figures"]}
    ingest = figures["ingest POST /api/orders, saturation"]
    assert ingest["ceiling"] == 8000
    assert ingest["ceiling_name"] == "bare FastAPI, 2 worker(s)"
    assert ingest["ratio"] == 0.925
    assert figures["processor, delay 200 ms, vs the tutorial's design"]["ratio"] == 500.0
    assert figures["processor, delay 200 ms, backlog drain"]["ceiling"] == 22500.0  # slowest op / 2
    assert figures["end to end, delay 0: highest sustained rate"]["value"] == 499


def test_targets_met_not_met_and_not_measured() -> None:
    targets = {t["name"].split(":")[0].split(" >=")[0]: t for t in build_report(_results(), {})["targets"]}
    assert targets["ingest"]["met"] is True
    assert targets["reads"]["met"] is False  # the list is at 44%
    assert targets["end to end, delay 0, 500 orders/s"]["met"] is True
    assert targets["delay 200 ms"]["met"] is True
    assert targets["bulk ingest"]["met"] is None
    assert "not merged yet" in targets["bulk ingest"]["measured"]


def test_non_2xx_fails_the_ingest_target() -> None:
    results = _results()
    results["ingest"]["saturation"] = _wrk(7900, non_2xx=3)
    ingest = build_report(results, {})["targets"][0]
    assert ingest["met"] is False
    assert "3 non-2xx" in ingest["measured"]


def test_an_unfinished_drain_fails_the_delay_target() -> None:
    results = _results()
    results["baseline"]["processor"].update(all_completed=False, completed=10)
    target = build_report(results, {})["targets"][3]
    assert target["met"] is False
    assert "before the time limit" in target["measured"]


def test_an_empty_run_still_makes_a_report() -> None:
    report = build_report({}, {})
    assert all(t["met"] is None for t in report["targets"])


def test_tables_and_charts_render(tmp_path: Path) -> None:
    report = build_report(_results(), {"mode": "quick", "started": "now"})
    console = Console(file=open(tmp_path / "out.txt", "w"), width=150)  # noqa: SIM115
    for table in summary_tables(report):
        console.print(table)
    console.file.close()
    assert "not met" in (tmp_path / "out.txt").read_text()
    charts = write_charts(report, tmp_path)
    assert [c.name for c in charts] == ["load_curve.png", "ratios.png"]
    assert all(c.stat().st_size > 1000 for c in charts)
