"""What every process of the order tracking system runs with, whatever it serves.

JSON log lines (`logs`), traces through OpenTelemetry (`tracing`; the SDK behind the `tracing`
extra, loaded only when tracing is on) and the one retry backoff every retry loop uses
(`backoff`).
"""
