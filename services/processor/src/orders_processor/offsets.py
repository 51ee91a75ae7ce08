"""Which offset of a partition may be committed: the end of the contiguous processed prefix.

Orders finish out of order (one order's delay never holds up another), but a
commit says "everything before this offset is done". Committing only the
contiguous prefix means a crash re-delivers unfinished orders and never skips one.
"""

from collections import deque

__all__ = ["PartitionOffsets"]


class PartitionOffsets:
    """Offsets of one partition handed out for processing, in the order they arrived."""

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._done: set[int] = set()
        self._next: int | None = None  # the offset to commit: first one not yet processed
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

    def finished(self, offset: int) -> None:
        self._done.add(offset)
        pending, done = self._pending, self._done
        while pending and pending[0] in done:
            done.discard(head := pending.popleft())
            self._next = head + 1

    def to_commit(self) -> int | None:
        """The offset to commit now, or None when nothing new is ready."""
        if self._next is None or self._next == self._committed:
            return None
        return self._next

    def committed(self, offset: int) -> None:
        self._committed = offset
