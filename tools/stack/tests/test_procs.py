"""Child processes: they stop when asked, and they outlive the thread that started them."""

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

from orders_stack.procs import Proc


def test_a_child_outlives_the_thread_that_started_it(tmp_path: Path) -> None:
    async def start() -> Proc:
        return await asyncio.to_thread(Proc("sleeper", ["sleep", "60"], tmp_path / "sleeper.log").start)

    proc = asyncio.run(start())  # the loop's worker thread ends here
    try:
        assert proc.wait(1) is None, "killed along with the thread that started it"
        assert proc.alive()
    finally:
        proc.stop()
    assert not proc.alive()


def test_children_die_with_their_parent_however_it_dies(tmp_path: Path) -> None:
    script = (
        "import sys, time; from pathlib import Path; from orders_stack.procs import Proc; "
        f"p = Proc('child', ['sleep', '60'], Path({str(tmp_path / 'child.log')!r})).start(); "
        "print(p.pid, flush=True); time.sleep(60)"
    )
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) as parent:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
    for _ in range(100):
        if not _running(child):
            return
        time.sleep(0.1)
    raise AssertionError("the child outlived its SIGKILLed parent")


def _running(pid: int) -> bool:
    """Alive and not a zombie (whoever adopted it may not have reaped it yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
