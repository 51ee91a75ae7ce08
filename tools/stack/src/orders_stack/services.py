"""The api, processor and query as local processes on top of an `Infra`, and the front door.

`Stack` gives them a key prefix, topics and a consumer group of their own, starts the gateway
(nginx, `gateway_port`) when asked, and is a context manager that stops everything it started,
in reverse order, whatever happened in between.
"""

import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from types import TracebackType

import httpx

from .gateway import Gateway, find_nginx
from .procs import Proc, wait_until
from .stack import Infra, _port_free, free_port

__all__ = ["SERVICES", "Stack"]

log = logging.getLogger(__name__)

SERVICES = ("api", "processor", "query")


@dataclass
class Stack:
    """The three services on top of an `Infra`, with a key prefix, topic and group of their own.

    `gateway_port`: also the front door (nginx) on that port (0: a free one; None: none); the
    `Location` headers and the dashboard's order form then name the gateway's URL.
    `processors`, `query_instances`: scaled out, the further ones (`processor-2`, `query-2`, ...)
    on free ports, the gateway balancing reads over every query instance."""

    infra: Infra
    api_port: int = 8000
    query_port: int = 8001
    processor_port: int = 8002
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)
    gateway_port: int | None = None
    gateway: Gateway | None = None
    processors: int = 1
    query_instances: int = 1

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.query_port}"

    @property
    def query_urls(self) -> list[str]:
        """Every query instance's URL, `query_url` first."""
        return [self.query_url, *(f"http://127.0.0.1:{port}" for port in self._more_query_ports())]

    def _more_query_ports(self) -> tuple[int, ...]:
        keys = [f"query-{n}" for n in range(2, self.query_instances + 1)]
        return tuple(int(self.procs[key].env["QUERY_PORT"]) for key in keys if key in self.procs)

    @property
    def processor_url(self) -> str:
        return f"http://127.0.0.1:{self.processor_port}"

    @property
    def gateway_url(self) -> str | None:
        """The front door's URL, None when the stack runs without it."""
        return None if self.gateway_port is None else f"http://127.0.0.1:{self.gateway_port}"

    def service_env(self) -> dict[str, str]:
        """The environment passes through, but Kafka, Redis and the ports are the ones started here."""
        front = self.gateway_url
        # The dashboard (served by query) places orders on the api from the browser, through the
        # gateway when there is one (same origin there; cross-origin from the query port).
        origins = [self.query_url, f"http://localhost:{self.query_port}"]
        if front:
            origins += [front, f"http://localhost:{self.gateway_port}"]
        return {
            "BIND_HOST": "127.0.0.1",
            # Location headers and the dashboard's form: the front door when it runs.
            "QUERY_PUBLIC_URL": front or self.query_url,
            "API_PUBLIC_URL": front or self.api_url,
            "CORS_ORIGINS": ",".join(origins),
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.infra.kafka_bootstrap,
            **self.infra.kafka_env,
            "REDIS_URL": self.infra.redis_url,
            **self.infra.redis_env,
            "API_PORT": str(self.api_port),
            "QUERY_PORT": str(self.query_port),
            "PROCESSOR_PORT": str(self.processor_port),
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }

    def start(self) -> "Stack":
        self.api_port = self.api_port or free_port()
        self.query_port = self.query_port or free_port()
        self.processor_port = self.processor_port or free_port()
        if self.gateway_port is not None:
            find_nginx()  # before anything starts: a missing nginx is said at once
            self.gateway_port = self.gateway_port or free_port()
        ports = [self.api_port, self.query_port, self.processor_port]
        for port in [*ports, *([self.gateway_port] if self.gateway_port else [])]:
            _port_free(port)
        try:
            for name in SERVICES:
                self.start_service(name)
            for n in range(2, self.processors + 1):
                self.start_service("processor", key=f"processor-{n}", PROCESSOR_PORT=str(free_port()))
            for n in range(2, self.query_instances + 1):
                self.start_service("query", key=f"query-{n}", QUERY_PORT=str(free_port()))
            for key in list(self.procs):
                self.wait_ready(key)
            if self.gateway_port is not None:
                self.gateway = Gateway(
                    self.infra.data_dir,
                    api_port=self.api_port,
                    query_port=self.query_port,
                    port=self.gateway_port,
                    bind_host=self.service_env()["BIND_HOST"],
                    more_query_ports=self._more_query_ports(),
                ).start()
        except BaseException:
            self.stop()
            raise
        return self

    def start_service(self, name: str, key: str | None = None, **env: str) -> Proc:
        """Start one service process (`key` names a second processor, say)."""
        key = key or name
        proc = Proc(
            key,
            [sys.executable, "-m", f"orders_{name}"],
            self.infra.data_dir / "logs" / f"{key}.log",
            env={**self.service_env(), **env},
        ).start()
        self.procs[key] = proc
        return proc

    def restart(self, key: str, sig: signal.Signals = signal.SIGKILL) -> Proc:
        """Stop one service process with `sig` (SIGKILL: a crash) and start it again as it was."""
        old = self.procs[key]
        old.signal(sig)
        if old.wait(60) is None:
            old.kill()
        old.stop()  # reaps what is left of its group
        self.procs[key] = proc = Proc(key, old.argv, old.log_path, env=old.env).start()
        return proc

    def wait_ready(self, key: str, timeout: float = 60) -> None:
        proc = self.procs[key]
        service = key.split("-")[0]  # "processor-2" is a processor
        url = f"http://127.0.0.1:{proc.env[service.upper() + '_PORT']}/health/ready"
        wait_until(key, lambda: httpx.get(url, timeout=2).status_code == 200, timeout, [proc])

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None
        for proc in reversed(list(self.procs.values())):
            proc.stop()
        self.procs.clear()

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
