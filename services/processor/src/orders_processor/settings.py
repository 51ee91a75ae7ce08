from functools import lru_cache

from pydantic import Field

from orders_contract.settings import HttpSettings, KafkaSettings, LogSettings, RedisSettings, TracingSettings

__all__ = ["Settings", "get_settings"]


class Settings(KafkaSettings, RedisSettings, HttpSettings, LogSettings, TracingSettings):
    processor_port: int = Field(8002, description="Port of the processor's health and metrics.")
    kafka_consumer_group: str = Field("orders-processor", description="Consumer group of the processors.")
    processing_delay_ms: int = Field(
        200, ge=0, description="Simulated work between PROCESSING and COMPLETED, as in the tutorial."
    )
    processor_max_in_flight: int = Field(
        5000, ge=1, description="Orders one processor works on at once; fetching pauses beyond."
    )
    processor_commit_interval_ms: int = Field(
        200, ge=10, description="How often processed offsets are committed."
    )
    processor_commit_lag_ms: int = Field(
        2000,
        ge=0,
        description="Commit an offset only once the Redis writes before it are this old, so that "
        "Redis's once-a-second AOF fsync has put them on disk (0: commit at once); the status "
        "relay publishes a transition only once it is this old, for the same reason.",
    )
    processor_drain_timeout_ms: int = Field(
        20_000, ge=0, description="On shutdown or rebalance: how long in-flight orders may finish."
    )
    processor_reject_products: str = Field(
        "",
        description="Fault injection, off when empty: a regular expression; orders whose "
        "productName it matches are dead-lettered as if processing failed (to rehearse a redrive).",
    )
    dlq_max_replays: int = Field(
        3, ge=1, description="Redrives of one dead letter; the next one sends it to quarantine instead."
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()
