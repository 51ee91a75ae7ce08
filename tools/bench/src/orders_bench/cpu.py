"""CPU time of the stack's processes, per component, from /proc (Linux).

A process's CPU is `utime + stime` of /proc/<pid>/stat (all its threads), plus `cutime +
cstime` (the children it has waited for), summed over its whole process tree: uvicorn's
workers are children of the service's process, found by scanning /proc for their parent
pid. `Sampler` reads every component's tree at once; the difference of two samples is the CPU
each component spent in between. Parsing is pure and unit tested.
"""

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "COMPONENTS",
    "ProcStat",
    "Sampler",
    "children_of",
    "cpu_delta",
    "parse_stat",
    "tree_cpu_s",
]

COMPONENTS = ("api", "processor", "query", "kafka", "redis")

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    utime: int
    stime: int
    cutime: int
    cstime: int
    """In clock ticks (os.sysconf("SC_CLK_TCK") a second)."""

    @property
    def ticks(self) -> int:
        return self.utime + self.stime + self.cutime + self.cstime


def parse_stat(text: str) -> ProcStat:
    """One /proc/<pid>/stat line. The command name (field 2, in parentheses) may hold spaces and
    parentheses itself, so the fields are counted from its last ')'."""
    head, sep, rest = text.rpartition(")")
    if not sep:
        raise ValueError(f"not a /proc/<pid>/stat line: {text[:80]!r}")
    pid = int(head.split("(", 1)[0])
    fields = rest.split()
    # After the name: state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17).
    if len(fields) < 15:
        raise ValueError(f"a /proc/<pid>/stat line with too few fields: {text[:80]!r}")
    return ProcStat(
        pid=pid,
        ppid=int(fields[1]),
        utime=int(fields[11]),
        stime=int(fields[12]),
        cutime=int(fields[13]),
        cstime=int(fields[14]),
    )


def children_of(stats: Iterable[ProcStat], roots: Iterable[int]) -> set[int]:
    """The pids of `roots` and of every descendant of theirs among `stats`."""
    by_parent: dict[int, list[int]] = {}
    for stat in stats:
        by_parent.setdefault(stat.ppid, []).append(stat.pid)
    found: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo.extend(by_parent.get(pid, ()))
    return found


def tree_cpu_s(stats: Mapping[int, ProcStat], roots: Iterable[int], hz: int) -> float:
    """CPU seconds of the trees of `roots` (the roots that are gone count nothing)."""
    pids = children_of(stats.values(), roots)
    return sum(stats[pid].ticks for pid in pids if pid in stats) / hz


def cpu_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """CPU seconds each component spent between two samples (a component missing from either
    sample is left out; a negative difference, a process restarted in between, counts 0)."""
    return {name: max(0.0, after[name] - before[name]) for name in after if name in before}


def read_all(proc: Path = PROC) -> dict[int, ProcStat]:
    """Every process's stat (those that end while being read are skipped)."""
    stats: dict[int, ProcStat] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = parse_stat((entry / "stat").read_text())
        except (OSError, ValueError):
            continue
        stats[stat.pid] = stat
    return stats


class Sampler:
    """The CPU seconds of each component's processes so far, by name (`component -> root pids`)."""

    def __init__(self, roots: Mapping[str, list[int]], proc: Path = PROC) -> None:
        self.roots = {name: list(pids) for name, pids in roots.items()}
        self.proc = proc
        self.hz = os.sysconf("SC_CLK_TCK")

    def sample(self) -> dict[str, float]:
        stats = read_all(self.proc)
        return {name: tree_cpu_s(stats, pids, self.hz) for name, pids in self.roots.items()}
