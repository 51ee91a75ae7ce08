"""Which offset of a partition may be committed: the end of the contiguous processed prefix.

Orders finish out of order (one order's delay never holds up another), but a
commit says "everything before this offset is done". Committing only the
contiguous prefix means a crash re-delivers unfinished orders and never skips one.

Each step of that prefix remembers when it was reached, so a commit can also
wait until the Redis writes behind it are old enough to be on disk (Redis
fsyncs its AOF once a second).
"""

import time
from collections import deque

__all__ = ["PartitionOffsets"]


class PartitionOffsets:
    """Offsets of one partition handed out for processing, in the order they arrived."""

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._done: set[int] = set()
        self._steps: deque[tuple[float, int]] = deque()  # (when, offset to commit) as the prefix grew
        self._ready: int | None = None  # the offset to commit: first one not yet processed
        self._committed: int | None = None
        self._last: int | None = None  # the latest offset started

    def __len__(self) -> int:
        return len(self._pending)

    def follows(self, offset: int) -> bool:
        """False when `offset` is not after every offset started so far (the position was reset)."""
        return self._last is None or offset > self._last

    def started(self, offset: int) -> None:
        if not self.follows(offset):
            raise ValueError(f"offset {offset} arrived after {self._last}")
        self._pending.append(offset)
        self._last = offset

    def finished(self, offset: int, at: float | None = None) -> None:
        """`offset` is fully written, at monotonic time `at` (now by default)."""
        self._done.add(offset)
        pending, done = self._pending, self._done
        end = None
        while pending and pending[0] in done:
            done.discard(head := pending.popleft())
            end = head + 1
        if end is not None:
            self._steps.append((time.monotonic() if at is None else at, end))

    def to_commit(self, written_before: float | None = None) -> int | None:
        """The offset to commit now, or None when nothing new is ready.

        With `written_before` (a monotonic time), only the end of a prefix whose
        records were all written before then.
        """
        steps = self._steps
        while steps and (written_before is None or steps[0][0] <= written_before):
            self._ready = steps.popleft()[1]
        return None if self._ready == self._committed else self._ready

    def committed(self, offset: int) -> None:
        self._committed = offset
