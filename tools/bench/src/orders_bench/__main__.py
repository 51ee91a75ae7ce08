"""`python -m orders_bench` (`make bench`): measure the stack against the machine's ceilings.

Starts Kafka, Redis and the three services as local processes (through
orders_stack) unless `--api-url` names a running stack, drives load, and
writes `.reports/bench/report.json` with `load_curve.png` and `ratios.png`.
Everything it started is stopped at the end, on failure and on Ctrl-C.
"""

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

from rich.console import Console

from orders_stack.stack import ROOT

from .feeds import FEEDS
from .plan import check_tools, progress_bar
from .report import build_report, summary_tables, write_charts
from .session import Options, run_bench


def _interrupt(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM: leaving the `with` blocks stops every process started so far."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="orders_bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer and shorter steps (under 2 minutes)")
    parser.add_argument(
        "--cluster",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the capacity phase: CPU per order on the single-node stack and on the cluster profile, "
        "and the capacity model (default: in the full run, not with --quick)",
    )
    parser.add_argument(
        "--capacity-only",
        action="store_true",
        help="only the capacity phase, on both profiles (make bench-cluster)",
    )
    parser.add_argument(
        "--capacity-rate", type=int, default=None, help="orders a second of the capacity phase (default 200)"
    )
    parser.add_argument(
        "--capacity-profiles",
        default="single,cluster",
        help="which profiles the capacity phase runs, comma-separated (default: single,cluster)",
    )
    parser.add_argument(
        "--feed",
        choices=FEEDS,
        default=env("BENCH_FEED", "redis"),
        help="where end-to-end timing sees COMPLETED: the Redis update stream or the SSE feed",
    )
    parser.add_argument("--out", type=Path, default=ROOT / ".reports" / "bench", help="report folder")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=ROOT / ".data" / "bench",
        help="Kafka, Redis and logs of the stack the bench starts (wiped at start)",
    )
    parser.add_argument(
        "--api-url",
        default=env("BENCH_API_URL", ""),
        help="measure a running stack instead of starting one (with --query-url, --redis-url)",
    )
    parser.add_argument("--query-url", default=env("BENCH_QUERY_URL", ""))
    parser.add_argument(
        "--redis-url",
        default=env("BENCH_REDIS_URL", ""),
        help="the running stack's Redis (update stream, redis-benchmark)",
    )
    parser.add_argument(
        "--kafka-bootstrap",
        default=env("BENCH_KAFKA_BOOTSTRAP", ""),
        help="the running stack's Kafka (ProducerPerformance)",
    )
    parser.add_argument(
        "--key-prefix", default=env("REDIS_KEY_PREFIX", ""), help="the running stack's REDIS_KEY_PREFIX"
    )
    return parser


def main() -> None:
    args = _parser().parse_args()
    console = Console() if sys.stdout.isatty() else Console(width=150)
    for noisy in ("aiokafka", "kafka", "httpx"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    if args.api_url and not (args.query_url and args.redis_url):
        sys.exit("--api-url needs --query-url and --redis-url too")
    if args.api_url and args.capacity_only:
        sys.exit("--capacity-only starts stacks of its own: it takes no --api-url")
    missing = check_tools(java_only=args.capacity_only)
    if missing:
        sys.exit("make bench needs: " + ", ".join(missing) + " (make bench-tools installs them when root)")
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    options = Options(
        quick=args.quick,
        feed=args.feed,
        out=args.out,
        data_dir=args.data_dir,
        api_url=args.api_url,
        query_url=args.query_url,
        redis_url=args.redis_url,
        kafka_bootstrap=args.kafka_bootstrap,
        key_prefix=args.key_prefix,
        cluster=args.cluster,
        capacity_only=args.capacity_only,
        capacity_rate=args.capacity_rate,
        capacity_profiles=tuple(p.strip() for p in args.capacity_profiles.split(",") if p.strip()),
    )
    try:
        with progress_bar() as progress:
            results, meta = run_bench(options, progress)
    except KeyboardInterrupt:
        console.print("\nInterrupted; everything the bench started was stopped. No report written.")
        sys.exit(130)
    except (RuntimeError, TimeoutError, OSError) as exc:
        console.print(f"\n[red]bench failed:[/] {exc}\nEverything the bench started was stopped.")
        sys.exit(1)
    report = build_report(results, meta)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "report.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    charts = write_charts(report, args.out) if meta["mode"] != "capacity" else []
    for table in summary_tables(report):
        console.print(table)
    if results.get("errors"):
        console.print("[yellow]Measurements that failed:[/]\n  " + "\n  ".join(results["errors"]))
    console.print(f"Report: {path}\nCharts: {', '.join(str(c) for c in charts)}")
    console.print(
        f"Machine: {meta['cpus']} cores, load average {meta['load_average_at_start']} at start, "
        f"{meta['load_average_at_end']} at end; the run took {meta['duration_s']:.0f}s."
    )


if __name__ == "__main__":
    main()
