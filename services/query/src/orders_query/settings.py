from functools import lru_cache

from pydantic import Field

from orders_common.settings import HttpSettings, LogSettings, RedisSettings

__all__ = ["Settings", "get_settings"]


class Settings(RedisSettings, HttpSettings, LogSettings):
    query_port: int = Field(8001, description="Port of the query API.")
    query_workers: int = Field(1, ge=1, description="uvicorn worker processes of the query API.")


@lru_cache
def get_settings() -> Settings:
    return Settings()
