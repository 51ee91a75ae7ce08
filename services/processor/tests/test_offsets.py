import pytest

from orders_processor.offsets import PartitionOffsets


def test_commits_only_the_contiguous_prefix() -> None:
    offsets = PartitionOffsets()
    for n in (10, 11, 12, 13):
        offsets.started(n)
    assert offsets.to_commit() is None
    offsets.finished(12)  # out of order: 10 and 11 are not done
    assert offsets.to_commit() is None
    offsets.finished(10)
    assert offsets.to_commit() == 11
    offsets.finished(11)
    assert offsets.to_commit() == 13  # 12 was already done
    offsets.committed(13)
    assert offsets.to_commit() is None
    assert len(offsets) == 1
    offsets.finished(13)
    assert offsets.to_commit() == 14


def test_gaps_in_offsets_are_fine() -> None:
    # Compacted topics and transaction markers leave gaps between offsets.
    offsets = PartitionOffsets()
    offsets.started(5)
    offsets.started(9)
    offsets.finished(9)
    offsets.finished(5)
    assert offsets.to_commit() == 10


def test_offsets_must_arrive_in_order() -> None:
    offsets = PartitionOffsets()
    offsets.started(3)
    offsets.finished(3)
    assert not offsets.follows(3)
    assert not offsets.follows(2)
    assert offsets.follows(4)
    with pytest.raises(ValueError, match="after"):
        offsets.started(3)


def test_waits_until_the_writes_are_old_enough() -> None:
    offsets = PartitionOffsets()
    for n in (0, 1, 2):
        offsets.started(n)
    offsets.finished(0, at=10.0)
    offsets.finished(2, at=11.0)
    offsets.finished(1, at=12.0)  # the prefix reaches 3 only now
    assert offsets.to_commit(written_before=9.0) is None
    assert offsets.to_commit(written_before=10.5) == 1
    assert offsets.to_commit(written_before=11.5) == 1  # 2 was done at 11, but 1 only at 12
    assert offsets.to_commit(written_before=12.0) == 3
    offsets.committed(3)
    assert offsets.to_commit(written_before=99.0) is None
