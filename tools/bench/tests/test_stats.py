import pytest

from orders_bench.stats import percentile, ratio, summarize


def test_percentile_interpolates_like_numpy_linear() -> None:
    samples = [1.0, 2.0, 3.0, 4.0]
    assert percentile(samples, 0) == 1.0
    assert percentile(samples, 100) == 4.0
    assert percentile(samples, 50) == pytest.approx(2.5)
    assert percentile(samples, 99) == pytest.approx(3.97)  # numpy.percentile([1,2,3,4], 99)


def test_percentile_ignores_input_order_and_handles_one_sample() -> None:
    assert percentile([9.0, 1.0, 5.0], 50) == 5.0
    assert percentile([7.0], 99) == 7.0


@pytest.mark.parametrize("pct", [-1, 101])
def test_percentile_rejects_out_of_range(pct: float) -> None:
    with pytest.raises(ValueError, match="within"):
        percentile([1.0], pct)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)


def test_summarize_reports_milliseconds() -> None:
    summary = summarize([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert summary["count"] == 100
    assert summary["p50"] == pytest.approx(50.5)
    assert summary["p99"] == pytest.approx(99.01)
    assert summary["max"] == 100.0
    assert summary["mean"] == pytest.approx(50.5)


def test_summarize_nothing() -> None:
    assert summarize([]) == {"count": 0, "mean": None, "p50": None, "p95": None, "p99": None, "max": None}


def test_ratio() -> None:
    assert ratio(90, 100) == 0.9
    assert ratio(None, 100) is None
    assert ratio(5, None) is None
    assert ratio(5, 0) is None
