import pytest

from orders_bench.pacing import Schedule


def test_total_is_rate_times_duration() -> None:
    assert Schedule(500, 2).total == 1000
    assert Schedule(3, 1.5).total == 5  # 4.5 rounded up: the last one is due within the window
    assert Schedule(0.5, 1).total == 1


def test_request_i_is_due_at_i_over_rate() -> None:
    schedule = Schedule(100, 1, start=10.0)
    assert schedule.due_at(0) == 10.0
    assert schedule.due_at(50) == pytest.approx(10.5)


def test_due_by_counts_what_should_have_gone_out() -> None:
    schedule = Schedule(100, 1, start=10.0)
    assert schedule.due_by(9.0) == 0
    assert schedule.due_by(10.0) == 1  # request 0 is due at the start
    assert schedule.due_by(10.0099) == 1
    assert schedule.due_by(10.01) == 2
    assert schedule.due_by(10.5) == 51
    assert schedule.due_by(99.0) == 100  # never more than the total


def test_a_late_tick_catches_up_in_one_burst() -> None:
    """Open loop: a generator that wakes late sends everything due at once, it does not slow down."""
    schedule = Schedule(1000, 1, start=0.0)
    assert schedule.due_by(0.050) - schedule.due_by(0.0) == 50


def test_next_wait() -> None:
    schedule = Schedule(10, 1, start=0.0)
    assert schedule.next_wait(1, 0.0) == pytest.approx(0.1)
    assert schedule.next_wait(1, 0.25) == 0.0  # already late
    assert schedule.next_wait(10, 0.5) == 0.0  # all sent


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="positive"):
        Schedule(0, 1)
    with pytest.raises(ValueError, match="positive"):
        Schedule(10, 0)
