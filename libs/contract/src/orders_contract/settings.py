"""Configuration: environment variables, read by pydantic-settings.

Every variable any service reads is declared here, once. Each service's
settings class picks the groups it needs; README.md lists them all.
"""

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "AuthSettings",
    "GatewaySettings",
    "HttpSettings",
    "KafkaSettings",
    "LogSettings",
    "RedisSettings",
    "TracingSettings",
]


class _Base(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)


class LogSettings(_Base):
    log_level: str = Field("INFO", description="Python log level of the service.")
    log_format: Literal["text", "json"] = Field(
        "text",
        description="`json`: one JSON object a line, with the service, the order id and the trace "
        "and span ids where there are some.",
    )


class TracingSettings(_Base):
    tracing_sample_ratio: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Share of new traces sampled (parent-based: a sampled caller is always "
        "followed); 0 turns tracing off. Tracing is on only when an OTLP endpoint is set "
        "(`OTEL_EXPORTER_OTLP_ENDPOINT`, see Operating it).",
    )


class KafkaSettings(_Base):
    kafka_bootstrap_servers: str = Field("localhost:9092", description="Kafka brokers, comma separated.")
    kafka_orders_topic: str = Field("orders", description="Topic of order events.")
    kafka_dlq_topic: str = Field("orders.dlq", description="Topic of messages that can never be processed.")
    kafka_quarantine_topic: str = Field(
        "orders.quarantine",
        description="Topic of dead letters redriven too often (`make dlq`): kept, never redriven again.",
    )
    kafka_status_topic: str = Field(
        "orders.status", description="Topic of status events: one CloudEvent per transition."
    )
    kafka_topic_retention_ms: int = Field(
        -1,
        ge=-1,
        description="retention.ms of the topics when they are created; -1 keeps every record "
        "(what `make rebuild` needs of the status topic).",
    )
    kafka_topic_partitions: int = Field(
        6, ge=1, description="Partitions of the topics when they are created."
    )
    kafka_replication_factor: int = Field(
        1,
        ge=1,
        description="Replicas of the topics when they are created; a topic found with fewer is "
        "reported at start (a warning and the `kafka_topic_under_replicated` gauge), never "
        "silently used. `make up KAFKA_BROKERS=3` sets 3.",
    )
    kafka_min_insync_replicas: int | None = Field(
        None,
        ge=1,
        description="min.insync.replicas of the topics when they are created: replicas that must "
        "hold a record before an `acks=all` send is acknowledged (a partition with fewer in sync "
        "refuses writes rather than keep one copy). Unset: the broker's own default. At most "
        "`KAFKA_REPLICATION_FACTOR`. `make up KAFKA_BROKERS=3` sets 2.",
    )

    @model_validator(mode="after")
    def _min_insync_fits(self) -> "KafkaSettings":
        wanted = self.kafka_min_insync_replicas
        if wanted is not None and wanted > self.kafka_replication_factor:
            raise ValueError(
                f"KAFKA_MIN_INSYNC_REPLICAS={wanted} exceeds KAFKA_REPLICATION_FACTOR="
                f"{self.kafka_replication_factor}: every write would be refused"
            )
        return self


class RedisSettings(_Base):
    redis_url: str = Field("redis://localhost:6379/0", description="The read model's Redis.")
    redis_key_prefix: str = Field("", description="Prefix of every Redis key (to share one Redis).")
    redis_max_connections: int = Field(
        64, ge=1, description="Connections one process opens to Redis at most; more requests wait."
    )
    redis_stream_maxlen: int = Field(
        100_000, ge=1000, description="Approximate length cap of each shard's update stream."
    )
    redis_cluster: bool = Field(
        False,
        description="REDIS_URL is a node of a Redis Cluster: the services use redis-py's cluster "
        "client and load the Functions library on every primary.",
    )
    redis_shards: int = Field(
        1,
        ge=1,
        le=64,
        description="Shards of the read model: everything one atomic step touches is in one "
        "(one hash tag). 1 is one Redis's layout, with no tags; on a cluster, a multiple of the "
        "masters. Fixed once data exists: the services refuse to start on another number.",
    )
    redis_wait_replicas: int = Field(
        0,
        ge=0,
        le=5,
        description="Replicas that must acknowledge each pipeline's writes (Redis WAIT on the node "
        "written to) before a service acts on them: 1 on a Redis Cluster whose masters have a "
        "replica each, so a failover does not take back a write the processor committed past; "
        "0: one Redis, no replica.",
    )
    redis_wait_timeout_ms: int = Field(
        1000,
        ge=1,
        description="How long a WAIT for REDIS_WAIT_REPLICAS lasts at most; then a NOREPLICAS refusal.",
    )

    @model_validator(mode="after")
    def _shards_fit(self) -> "RedisSettings":
        if self.redis_cluster and self.redis_shards < 2:
            raise ValueError("REDIS_CLUSTER needs REDIS_SHARDS of 2 or more, a multiple of its masters")
        if self.redis_shards > 1 and ("{" in self.redis_key_prefix or "}" in self.redis_key_prefix):
            raise ValueError("REDIS_KEY_PREFIX must not hold braces: the shards' hash tags follow it")
        return self


class HttpSettings(_Base):
    bind_host: str = Field("127.0.0.1", description="Address the HTTP servers listen on.")
    http_header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A request head (request line and headers) not complete this long after the "
        "connection opened, or after the previous response on it ended, gets 408 and the "
        "connection is closed; bytes trickling in do not extend it.",
    )
    http_body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="A request body not complete this long after its head was gets 408 (or, if "
        "the response has started, the connection is just closed) and the connection is closed; "
        "bytes trickling in do not extend it, and responses (event streams) are never timed. "
        "30 s asks the largest body, a 1 MiB batch, for 35 KB/s at least.",
    )
    http_idle_timeout_s: float = Field(
        5.0,
        gt=0,
        description="A connection that sends nothing this long, from its start or from the end "
        "of its previous response (keep-alive), is closed.",
    )
    http_max_header_bytes: int = Field(
        32 * 1024,
        ge=1024,
        description="Largest request head (request target plus header names and values); a "
        "larger one gets 431 and is not read further.",
    )
    http_max_connections: int = Field(
        4096,
        ge=1,
        description="Open connections one server process keeps at most; a connection beyond it "
        "gets 503 with Retry-After and is closed.",
    )


class AuthSettings(_Base):
    """Access control of the api and the query service (`AUTH_MODE`, OpenID Connect, rate limits)."""

    auth_mode: Literal["none", "oidc"] = Field(
        "none",
        description="`oidc`: every endpoint but health, docs and static files needs a bearer token; "
        "`none`: the open API (refused on a non-loopback BIND_HOST unless set explicitly).",
    )
    oidc_issuer: str = Field("", description="The OpenID Connect provider's issuer URL (oidc mode).")
    oidc_audience: str = Field("", description="The audience (`aud`) an access token must name (oidc mode).")
    oidc_user_claim: str = Field("user_id", description="The claim that carries the user's numeric id.")
    oidc_roles_claims: str = Field(
        "roles,scp",
        description="Claims that carry roles or scopes (lists or space-separated), comma separated.",
    )
    oidc_staff_role: str = Field("orders:staff", description="The role (or scope) of staff.")
    oidc_service_role: str = Field("orders:service", description="The role (or scope) of service clients.")
    oidc_algorithms: str = Field("RS256,ES256", description="Accepted token signature algorithms.")
    oidc_clock_skew_s: int = Field(30, ge=0, le=300, description="Leeway for `exp` and `nbf`.")
    oidc_jwks_cache_s: int = Field(
        600, ge=10, description="How long the provider's keys are used before refetching."
    )
    oidc_jwks_min_refetch_s: float = Field(
        10.0, ge=0, description="An unknown `kid` refetches the keys at most this often."
    )
    oidc_token_cache_s: float = Field(
        30.0,
        ge=0,
        description="How long a verified token is remembered (never past its `exp`); 0: not at all.",
    )
    oidc_token_cache_size: int = Field(10_000, ge=0, description="Verified tokens remembered at most.")
    oidc_max_token_bytes: int = Field(8192, ge=256, description="A longer token is refused (401).")
    oidc_timeout_s: float = Field(5.0, gt=0, description="Longest wait for the provider's discovery or keys.")
    oidc_token_url: str = Field(
        "",
        description="Token endpoint Swagger UI's Authorize posts to, as a browser reaches it "
        "(default: the one in the provider's discovery document).",
    )
    oidc_swagger_client_id: str = Field(
        "", description="Client id Swagger UI's Authorize dialog starts with (client credentials)."
    )
    rate_limit_requests: int = Field(
        600, ge=0, description="Requests one customer may make per window (oidc mode); 0: no limit."
    )
    rate_limit_trusted_requests: int = Field(
        60_000, ge=0, description="The same for staff and service clients; 0: no limit."
    )
    rate_limit_window_s: int = Field(60, ge=1, description="The rate limit's window.")
    stream_ticket_ttl_s: int = Field(
        30, ge=1, le=600, description="How long a stream ticket may wait for its use."
    )


class GatewaySettings(_Base):
    """The front door (nginx) that `make up` and docker compose run in front of the api and the query
    service: read by the local stack (tools/stack) and by docker-compose.yml, not by a service."""

    gateway_port: int = Field(
        5000,
        ge=1,
        le=65535,
        description="Port of the front door: writes to the api, every read, the live streams, the "
        "dashboard and `/docs` to the query service, `/` redirects to `/docs`. With it running, "
        "`QUERY_PUBLIC_URL` (`Location` headers) and `API_PUBLIC_URL` (the dashboard's form) name it.",
    )
