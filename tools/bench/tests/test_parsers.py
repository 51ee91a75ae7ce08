from orders_bench.ceilings import parse_producer_perf, parse_redis_benchmark
from orders_bench.wrk import WRK_MARKER, get_ids_script, parse_wrk, post_script


def test_parse_wrk_reads_our_done_line() -> None:
    output = (
        "Running 3s test @ http://127.0.0.1:1/api/orders\n  2 threads and 64 connections\n"
        f'{WRK_MARKER}{{"requests":3000,"duration_us":3000000,"bytes":1,"connect":0,"read":1,"write":0,'
        '"status":12,"timeout":2,"mean_us":1500.0,"p50_us":1200,"p95_us":3000,"p99_us":5000,"max_us":9000}\n'
    )
    result = parse_wrk(output)
    assert result["rps"] == 1000.0
    assert result["ok_rps"] == 996.0
    assert result["non_2xx"] == 12
    assert result["socket_errors"] == 3
    assert result["latency_ms"] == {"mean": 1.5, "p50": 1.2, "p95": 3.0, "p99": 5.0, "max": 9.0}


def test_lua_scripts_keep_the_body_verbatim() -> None:
    body = '{"a":"]]","b":[1,2]}'
    script = post_script(body)
    assert "[=[" + body + "]=]" in script
    assert 'wrk.method = "POST"' in script
    assert "done = function" in script
    ids = get_ids_script("/api/orders/", ["x", "y"])
    assert "local ids = {[[x]],[[y]]}" in ids


def test_parse_producer_performance_final_line() -> None:
    output = (
        "148017 records sent, 29603.4 records/sec (9.82 MB/sec), 1302.2 ms avg latency, "
        "1850.0 ms max latency.\n"
        "300000 records sent, 31250.0 records/sec (10.36 MB/sec), 812.34 ms avg latency, "
        "1500.00 ms max latency, 790 ms 50th, 1300 ms 95th, 1450 ms 99th, 1490 ms 99.9th.\n"
    )
    result = parse_producer_perf(output)
    assert result["records_per_s"] == 31250.0
    assert result["latency_ms"]["p99"] == 1450.0


def test_parse_redis_benchmark_csv() -> None:
    output = (
        '"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms"\n'
        '"GET","27397.26","0.270","0.024","0.127"\n"XADD","20000.00","0.300","0.030","0.200"\n'
    )
    assert parse_redis_benchmark(output) == {"GET": 27397.26, "XADD": 20000.0}
