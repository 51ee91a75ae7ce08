from functools import lru_cache

from pydantic import Field

from orders_contract.settings import AuthSettings, HttpSettings, LogSettings, RedisSettings, TracingSettings

__all__ = ["Settings", "get_settings"]


class Settings(RedisSettings, HttpSettings, LogSettings, TracingSettings, AuthSettings):
    query_port: int = Field(8001, description="Port of the query API.")
    query_workers: int = Field(1, ge=1, description="uvicorn worker processes of the query API.")
    api_public_url: str = Field(
        "http://localhost:8000", description="Base URL of the ingest API, for the dashboard's order form."
    )
    sse_heartbeat_ms: int = Field(
        15000, ge=100, description="An idle event stream gets a comment line this often."
    )
    sse_client_buffer: int = Field(
        1000, ge=1, description="Events held for one slow client before it must catch up from Redis."
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()
