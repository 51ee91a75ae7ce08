"""Child processes that never outlive their parent."""

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

__all__ = ["Probe", "Proc", "wait_until"]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1

Probe = Callable[[], bool]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the child gets SIGKILL when the process that started it dies, however it dies."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


# PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, not the process:
# a child started from a short-lived thread (asyncio.to_thread, say) would be killed with
# it. Every child is therefore forked by this one thread, which lives as long as we do.
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="orders-stack-spawner")


class Proc:
    """One child process in its own process group, its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env or os.environ)
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> "Proc":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.popen = _SPAWNER.submit(
                subprocess.Popen,
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,  # Ctrl-C in the terminal reaches us, not the children
                preexec_fn=_die_with_parent,
            ).result()
        log.info("started %s (pid %d), log %s", self.name, self.popen.pid, self.log_path)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            assert self.popen is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        """SIGKILL, no goodbye (for crash tests)."""
        self.signal(signal.SIGKILL)
        self.wait(10)

    def wait(self, timeout: float) -> int | None:
        if self.popen is None:
            return None
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`; then its group."""
        if not self.alive():
            self._kill_group()
            return
        self.signal(signal.SIGTERM)
        if self.wait(timeout) is None:
            log.warning("%s did not stop in %.0fs; killing it", self.name, timeout)
            self.signal(signal.SIGKILL)
            self.wait(10)
        self._kill_group()

    def _kill_group(self) -> None:
        """SIGKILL what the process left in its group (its own children), even after it exited."""
        if self.popen is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check_alive(self) -> None:
        if not self.alive():
            code = self.popen.returncode if self.popen else None
            raise RuntimeError(f"{self.name} exited ({code}); last log lines:\n{self.tail()}")


def wait_until(what: str, probe: Probe, timeout: float, procs: Sequence[Proc] = ()) -> None:
    """Call `probe` until it returns True; fail early if a process it depends on died."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        for proc in procs:
            proc.check_alive()
        try:
            if probe():
                return
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s (last error: {last!r})")
