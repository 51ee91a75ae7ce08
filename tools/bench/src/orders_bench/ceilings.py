"""The broker and store ceilings: Kafka's own ProducerPerformance and redis-benchmark.

Both are the vendors' tools, run against the same Kafka and Redis processes
the stack uses, in the same run, so our figures can be read as ratios of what
the machine allows.
"""

import csv
import io
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["parse_producer_perf", "parse_redis_benchmark", "producer_perf", "redis_benchmark"]

# "300000 records sent, 31250.0 records/sec (10.36 MB/sec), 812.34 ms avg latency, 1500.00 ms max latency,
#  790 ms 50th, 1300 ms 95th, 1450 ms 99th, 1490 ms 99.9th."
_PERF = re.compile(
    r"(?P<records>\d+) records sent, (?P<rps>[\d.]+) records/sec \((?P<mbps>[\d.]+) MB/sec\), "
    r"(?P<avg>[\d.]+) ms avg latency, (?P<max>[\d.]+) ms max latency"
    r"(?:, (?P<p50>\d+) ms 50th, (?P<p95>\d+) ms 95th, (?P<p99>\d+) ms 99th)?"
)


def parse_producer_perf(output: str) -> dict[str, Any]:
    """The final summary line (the one with percentiles) of ProducerPerformance."""
    final = [m for m in _PERF.finditer(output) if m.group("p50") is not None]
    if not final:
        raise ValueError(f"no final summary in ProducerPerformance's output:\n{output[-2000:]}")
    m = final[-1]
    return {
        "records": int(m["records"]),
        "records_per_s": float(m["rps"]),
        "mb_per_s": float(m["mbps"]),
        "latency_ms": {
            "mean": float(m["avg"]),
            "p50": float(m["p50"]),
            "p95": float(m["p95"]),
            "p99": float(m["p99"]),
            "max": float(m["max"]),
        },
    }


def producer_perf(
    libs: Path, bootstrap: str, topic: str, records: int, record_size: int, timeout: float = 180
) -> dict[str, Any]:
    """org.apache.kafka.tools.ProducerPerformance from the stack's own jars, acks=all, idempotent."""
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("java not found: apt-get install openjdk-17-jre-headless")
    argv = [
        java,
        "-Xmx512m",
        "-Dlog4j2.level=warn",
        "-cp",
        f"{libs}/*",
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic",
        topic,
        "--num-records",
        str(records),
        "--record-size",
        str(record_size),
        "--throughput",
        "-1",
        "--producer-props",
        f"bootstrap.servers={bootstrap}",
        "acks=all",
        "enable.idempotence=true",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"ProducerPerformance failed ({done.returncode}): {done.stderr[-1000:]}")
    result = parse_producer_perf(done.stdout)
    result["record_size"] = record_size
    result["settings"] = "acks=all enable.idempotence=true, client defaults otherwise"
    return result


def parse_redis_benchmark(output: str) -> dict[str, float]:
    """`--csv` output: test name -> requests per second."""
    rows = list(csv.reader(io.StringIO(output)))
    if not rows or rows[0][:2] != ["test", "rps"]:
        raise ValueError(f"unexpected redis-benchmark output:\n{output[-1000:]}")
    return {row[0]: float(row[1]) for row in rows[1:] if len(row) >= 2}


def redis_benchmark(
    port: int, requests: int, clients: int = 50, tests: str = "get,set,hset,zadd,xadd", timeout: float = 120
) -> dict[str, Any]:
    """Debian's redis-benchmark against the stack's Redis, in a database of its own (15)."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise RuntimeError("redis-benchmark not found: apt-get install redis-tools")
    argv = [binary, "-h", "127.0.0.1", "-p", str(port), "-c", str(clients), "-n", str(requests)]
    argv += ["--dbnum", "15", "-t", tests, "--csv"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"redis-benchmark failed ({done.returncode}): {done.stderr[-1000:]}")
    rps = parse_redis_benchmark(done.stdout)
    return {"clients": clients, "requests": requests, "rps": rps}
