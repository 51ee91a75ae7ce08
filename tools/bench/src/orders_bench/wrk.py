"""wrk (Debian's package) for saturation figures: Lua scripts for POST bodies and id lists, parsed results.

wrk is closed-loop: each connection sends its next request as soon as the last
one was answered, so its requests per second are the server's saturation
throughput. Our Lua `done` hook prints one JSON line with the counts and the
latency percentiles, so nothing depends on wrk's human-readable text.
"""

import json
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["WRK_MARKER", "get_ids_script", "get_script", "parse_wrk", "post_script", "run_wrk"]

WRK_MARKER = "BENCH_JSON "

_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,"connect":%.0f,"read":%.0f,' ..
    '"write":%.0f,"status":%.0f,"timeout":%.0f,"mean_us":%.1f,"p50_us":%.0f,"p95_us":%.0f,' ..
    '"p99_us":%.0f,"max_us":%.0f}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max))
end
"""


def _lua_string(text: str) -> str:
    """A Lua long-bracket literal holding `text` verbatim."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


def post_script(body: str, path: str | None = None) -> str:
    """Every request POSTs `body` as JSON (to `path`, or the URL's own path)."""
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(body)}"]
    lines.append('wrk.headers["Content-Type"] = "application/json"')
    if path:
        lines.append(f"wrk.path = {_lua_string(path)}")
    return "\n".join(lines) + "\n" + _DONE


def get_script() -> str:
    """A plain GET of the URL given to wrk."""
    return _DONE.lstrip("\n")


def get_ids_script(prefix: str, ids: Sequence[str]) -> str:
    """Every request GETs `prefix + id` for an id picked at random from `ids`."""
    if not ids:
        raise ValueError("no ids to read")
    table = ",".join(_lua_string(i) for i in ids)
    return (
        f"local ids = {{{table}}}\nlocal n = #ids\nlocal prefix = {_lua_string(prefix)}\n"
        'request = function() return wrk.format("GET", prefix .. ids[math.random(n)]) end\n' + _DONE
    )


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests per second, non-2xx answers, socket errors and latency percentiles (ms)."""
    for line in output.splitlines():
        if line.startswith(WRK_MARKER):
            raw = json.loads(line[len(WRK_MARKER) :])
            break
    else:
        raise ValueError(f"no {WRK_MARKER.strip()} line in wrk's output:\n{output[-2000:]}")
    seconds = raw["duration_us"] / 1e6
    socket_errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    ok = max(0, raw["requests"] - raw["status"])
    return {
        "requests": int(raw["requests"]),
        "duration_s": round(seconds, 3),
        "rps": round(raw["requests"] / seconds, 1) if seconds else 0.0,
        "ok_rps": round(ok / seconds, 1) if seconds else 0.0,
        "non_2xx": int(raw["status"]),
        "socket_errors": int(socket_errors),
        "latency_ms": {
            "mean": round(raw["mean_us"] / 1000, 3),
            "p50": round(raw["p50_us"] / 1000, 3),
            "p95": round(raw["p95_us"] / 1000, 3),
            "p99": round(raw["p99_us"] / 1000, 3),
            "max": round(raw["max_us"] / 1000, 3),
        },
    }


def run_wrk(
    url: str,
    script: str,
    duration: float,
    connections: int = 64,
    threads: int = 2,
    timeout_s: int = 5,
) -> dict[str, Any]:
    """Run wrk for `duration` seconds against `url` with a Lua script; bounded in time."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk not found: apt-get install wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
        path = Path(handle.name)
    try:
        argv = [
            wrk,
            f"-t{threads}",
            f"-c{max(connections, threads)}",
            f"-d{max(1, round(duration))}s",
            f"--timeout={timeout_s}s",
            "-s",
            str(path),
            url,
        ]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + timeout_s + 30)
    finally:
        path.unlink(missing_ok=True)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout[-500:]}")
    result = parse_wrk(done.stdout)
    result["connections"] = connections
    return result
