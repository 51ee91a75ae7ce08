"""The capacity phase's pure parts: /proc parsing, process trees, CPU per order, the model."""

from pathlib import Path

import pytest

from orders_bench.capacity import per_order
from orders_bench.capmodel import Budgets, capacity_tables, model, plan_for
from orders_bench.cpu import ProcStat, Sampler, children_of, cpu_delta, parse_stat, read_all, tree_cpu_s

# A real line's shape: a name with a space and a parenthesis, then state, ppid, ... utime (14),
# stime (15), cutime (16), cstime (17), ...
LINE = "4242 (uvicorn (worker) 1) S 4200 4242 4242 0 -1 4194560 1234 0 0 0 150 25 7 3 20 0 4 0 100 0 0\n"


def stat(pid: int, ppid: int, utime: int = 0, stime: int = 0, cutime: int = 0, cstime: int = 0) -> ProcStat:
    return ProcStat(pid=pid, ppid=ppid, utime=utime, stime=stime, cutime=cutime, cstime=cstime)


def test_a_stat_line_is_read_from_after_the_names_last_parenthesis() -> None:
    got = parse_stat(LINE)
    assert got == stat(4242, 4200, utime=150, stime=25, cutime=7, cstime=3)
    assert got.ticks == 185


@pytest.mark.parametrize("text", ["", "4242 no parentheses S 1", "1 (short) S 0 1 2"])
def test_a_line_that_is_not_a_stat_line_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="stat"):
        parse_stat(text)


def test_a_tree_is_its_root_and_every_descendant() -> None:
    stats = [stat(1, 0), stat(10, 1), stat(11, 10), stat(12, 10), stat(20, 1), stat(21, 20)]
    assert children_of(stats, [10]) == {10, 11, 12}
    assert children_of(stats, [10, 20]) == {10, 11, 12, 20, 21}
    assert children_of(stats, [99]) == {99}


def test_a_trees_cpu_sums_its_processes_and_their_reaped_children() -> None:
    stats = {
        10: stat(10, 1, utime=100, stime=50, cutime=20),
        11: stat(11, 10, utime=300, stime=100),
        20: stat(20, 1, utime=1000),
    }
    assert tree_cpu_s(stats, [10], hz=100) == pytest.approx(5.7)
    assert tree_cpu_s(stats, [10, 20], hz=100) == pytest.approx(15.7)
    assert tree_cpu_s(stats, [77], hz=100) == 0


def test_the_difference_of_two_samples_never_goes_below_zero() -> None:
    before = {"api": 1.0, "kafka": 5.0, "gone": 1.0}
    after = {"api": 3.5, "kafka": 4.0, "new": 2.0}
    assert cpu_delta(before, after) == {"api": 2.5, "kafka": 0.0}


def test_the_sampler_reads_a_proc_folder(tmp_path: Path) -> None:
    for pid, ppid, utime in ((5, 1, 200), (6, 5, 100), (7, 1, 900)):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(f"{pid} (p) S {ppid} 0 0 0 0 0 0 0 0 0 {utime} 0 0 0 20\n")
    (tmp_path / "self").mkdir()  # not a pid
    (tmp_path / "8").mkdir()  # ended while being read: no stat
    assert sorted(read_all(tmp_path)) == [5, 6, 7]
    sampler = Sampler({"api": [5], "kafka": [7]}, tmp_path)
    sample = sampler.sample()
    assert sample["api"] == pytest.approx(300 / sampler.hz)
    assert sample["kafka"] == pytest.approx(900 / sampler.hz)


def test_cpu_per_order_subtracts_what_each_component_spends_idle() -> None:
    window = {"api": 2.0, "processor": 3.0, "query": 1.0, "kafka": 6.0, "redis": 1.0, "redis_masters": 0.8}
    idle = {"kafka": 0.1, "processor": 0.5}  # cores
    us = per_order(window, idle, wall_s=10.0, completed=2000)
    assert us["api"] == 1000.0
    assert us["processor"] == 0.0  # idle over the window is more than the window: never negative
    assert us["kafka"] == 2500.0
    assert us["redis_masters"] == 400.0
    assert us["total"] == 1000.0 + 0.0 + 500.0 + 2500.0 + 500.0  # the five components, not masters
    assert per_order(window, idle, 10.0, 0) == {}


def test_instances_are_the_cores_needed_over_the_budget_rounded_up() -> None:
    budgets = Budgets(python_process=0.7, redis_master=0.7, broker_cores=8, broker_utilisation=0.7)
    us = {
        "api": 700.0,
        "processor": 1400.0,
        "query": 70.0,
        "kafka": 2800.0,
        "redis": 999.0,
        "redis_masters": 350.0,
    }
    rows = plan_for(10_000, us, budgets)
    assert rows["api"] == {"us_per_order": 700.0, "cores": 7.0, "budget_cores": 0.7, "instances": 10}
    assert rows["processor"]["instances"] == 20
    assert rows["processor"]["partitions"] == 20
    assert rows["query"]["instances"] == 1
    assert rows["kafka"]["cores"] == 28.0
    assert rows["kafka"]["instances"] == 5  # 28 cores / 5.6 a broker
    assert rows["redis"]["instances"] == 5  # the masters' figure: 3.5 cores / 0.7
    small = plan_for(100, us, budgets)
    assert small["kafka"]["instances"] == 3  # replication factor 3
    assert small["redis"]["instances"] == 3  # the three shards
    assert small["api"]["instances"] == 1


def test_the_model_uses_every_redis_node_when_masters_are_not_known() -> None:
    rows = plan_for(10_000, {"redis": 700.0}, Budgets())
    assert rows["redis"]["instances"] == 10
    assert "api" not in rows


def test_the_model_states_its_budgets_and_renders_as_tables() -> None:
    us = {"api": 1000.0, "processor": 1500.0, "query": 1100.0, "kafka": 3000.0, "redis": 900.0}
    fitted = model(us, source="a run")
    assert fitted["budgets"]["python_process"] == 0.7
    assert set(fitted["rates"]) == {"10000", "100000"}
    assert fitted["rates"]["100000"]["api"]["instances"] == 143  # 100 cores / 0.7
    run = {"rate": 200, "acked": 10, "completed": 10, "us_per_order": us, "kept_up": True}
    tables = capacity_tables({"profiles": {"cluster": run, "single": {"error": "boom"}}, "model": fitted})
    assert [t.row_count for t in tables] == [2, 5]
