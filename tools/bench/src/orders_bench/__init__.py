"""`make bench`: drives load through the local stack and measures the machine's ceilings in the same run.

Nothing here is imported by a service. The load generators run as separate
processes (`orders_bench.loadgen`, wrk), so the figures never include the
orchestrator's own work.
"""

__all__: list[str] = []
