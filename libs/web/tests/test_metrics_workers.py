"""`serve()` with two uvicorn workers: a scrape reports what every worker counted, whichever
worker answers it; the workers' metrics directory is private and removed at exit."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from orders_stack import free_port

HERE = Path(__file__).resolve().parent

_SERVE = """
import sys
from orders_web.serving import serve
from orders_contract.settings import HttpSettings
serve("workers_app:create_app", HttpSettings(bind_host="127.0.0.1"), int(sys.argv[1]), workers=2,
      log_level="warning")
"""


@dataclass
class Served:
    base: str
    tmp: Path
    server: "subprocess.Popen[bytes]"

    def stop(self) -> int:
        """SIGTERM, as a container stop sends: uvicorn stops its workers, serve() cleans up."""
        self.server.send_signal(signal.SIGTERM)
        return self.server.wait(30)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """workers_app under serve(workers=2) on a free loopback port (TMPDIR: tmp_path). Every
    process it started is killed at the end, whatever happened (its own process group)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(HERE), "TMPDIR": str(tmp_path)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server = subprocess.Popen([sys.executable, "-c", _SERVE, str(port)], env=env, start_new_session=True)
    try:
        yield Served(f"http://127.0.0.1:{port}", tmp_path, server)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def get(url: str) -> httpx.Response:
    """On a new connection each time, so that either worker may take it."""
    return httpx.get(url, headers={"Connection": "close"}, timeout=10)


def wait_until_up(base: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if get(f"{base}/metrics").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)


def values(text: str) -> dict[str, float]:
    """Unlabelled samples by name, and the count of GET /items/{itemId} 200 as `items`."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if not s.labels:
                found[s.name] = s.value
            elif s.name.endswith("_count") and s.labels == {
                "method": "GET",
                "route": "/items/{itemId}",
                "status": "200",
            }:
                found["items"] = s.value
    return found


def running_in_group(pgid: int) -> list[int]:
    """The processes of a process group that still run (zombies, exited but not yet reaped by
    whoever inherited them, are left out), from /proc."""
    running = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rpartition(")")[2].split()[:3]
        except OSError:
            continue  # exited meanwhile
        if int(group) == pgid and state != "Z":
            running.append(int(stat.parent.name))
    return running


def group_gone(pgid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while running_in_group(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_scrape_counts_every_workers_requests_whichever_answers(served: Served) -> None:
    wait_until_up(served.base)
    assert len(list(served.tmp.glob("orders-metrics-*"))) == 1, "a private metrics directory"
    pids: set[str] = set()
    sent = 0
    while len(pids) < 2:  # until both workers have answered
        assert sent < 5000, "one worker took every connection"
        response = get(f"{served.base}/items/{sent}")
        assert response.status_code == 200
        pids.add(response.text)
        sent += 1

    scraped_by: set[str] = set()
    for _ in range(1000):  # until both workers have answered a scrape
        found = values(get(f"{served.base}/metrics").text)
        assert (found["items"], found["tiny_hits_total"], found["tiny_workers"]) == (sent, sent, 2)
        scraped_by.add(str(int(found["tiny_pid"])))
        if scraped_by == pids:
            break
    assert scraped_by == pids, "both workers answered scrapes"

    assert len(running_in_group(served.server.pid)) >= 3, "the server and its two workers"
    assert served.stop() == 0
    assert not list(served.tmp.glob("orders-metrics-*")), "removed at exit"
    assert group_gone(served.server.pid), "the workers stopped with it"
