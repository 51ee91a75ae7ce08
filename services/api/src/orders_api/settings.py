"""The api's settings: the shared groups of orders_contract.settings and its own."""

from functools import lru_cache

from pydantic import Field

from orders_contract.settings import (
    AuthSettings,
    HttpSettings,
    KafkaSettings,
    LogSettings,
    RedisSettings,
    TracingSettings,
)

__all__ = ["Settings", "get_settings"]


class Settings(KafkaSettings, RedisSettings, HttpSettings, LogSettings, TracingSettings, AuthSettings):
    api_port: int = Field(8000, description="Port of the ingest API.")
    api_workers: int = Field(1, ge=1, description="uvicorn worker processes of the ingest API.")
    query_public_url: str = Field(
        "http://localhost:8001", description="Base URL of the query service, for `Location` headers."
    )
    cors_origins: str = Field(
        "", description="Browser origins allowed by CORS (the dashboard's), comma separated (`*` for any)."
    )
    kafka_send_timeout_ms: int = Field(
        5000, ge=100, description="Longest wait for Kafka's acknowledgment before answering 503."
    )
    kafka_linger_ms: int = Field(0, ge=0, description="Producer linger: wait this long to batch sends.")
    idempotency_key_ttl_s: int = Field(
        86_400, ge=60, description="How long an `Idempotency-Key` keeps returning the same order."
    )
    abandoned_event_ttl_s: int = Field(
        7 * 86_400,
        ge=3600,
        description="How long the processor remembers to ignore an event the api answered 503 for.",
    )


@lru_cache
def get_settings() -> Settings:
    """The settings of the environment, read once per process (`create_app` without settings,
    `python -m orders_api`). Routes read the app's own through `deps.SettingsDep`."""
    return Settings()
