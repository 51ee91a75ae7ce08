"""The front door as a local process: Debian's nginx in front of the api and the query service.

The routing is infra/gateway/routes.conf, the file docker compose mounts too; this
module writes only what differs here: the upstreams' loopback ports, the listen
address, where docs/openapi is, and pid, temp and log paths under the stack's data dir (nothing under
/etc/nginx or /var). nginx runs in the foreground (`daemon off;`) like every other
process of the stack, its error and access logs in logs/gateway.log.
"""

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .procs import Proc, wait_until

__all__ = ["ROUTES", "Gateway", "find_nginx"]

ROUTES = Path(__file__).resolve().parents[4] / "infra" / "gateway" / "routes.conf"
OPENAPI_DIR = Path(__file__).resolve().parents[4] / "docs" / "openapi"
"""Where the front door's OpenAPI document is (front-door.json, written by `make openapi`)."""

# Connections nginx keeps to a service end before the service's own idle timeout
# (HTTP_IDLE_TIMEOUT_S, 5 s) would close them under a request.
_UPSTREAM = """\
    upstream {name} {{
{servers}
        keepalive 16;
        keepalive_timeout 4s;
    }}
"""


def _upstream(name: str, ports: list[int]) -> str:
    servers = "\n".join(f"        server 127.0.0.1:{port};" for port in ports)
    return _UPSTREAM.format(name=name, servers=servers)


_TEMP = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def find_nginx() -> str:
    """Debian's nginx (in /usr/sbin, which a user's PATH may lack)."""
    path = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if path is None:
        raise RuntimeError("nginx not found: apt-get install nginx-light (make up installs it as root)")
    return path


@dataclass
class Gateway:
    """nginx on `port`, routing to the api and query ports given (reads balanced over the query
    port and `more_query_ports`: a scaled-out stack's further query instances)."""

    data_dir: Path
    api_port: int
    query_port: int
    port: int = 5000
    bind_host: str = "127.0.0.1"
    more_query_ports: tuple[int, ...] = ()
    procs: list[Proc] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.data_dir / "gateway"

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.bind_host in ("0.0.0.0", "::", "") else self.bind_host
        return f"http://{host}:{self.port}"

    def config(self) -> str:
        """The main configuration file's text (`nginx -c`)."""
        home = self.home
        temp = "\n".join(f"    {kind}_temp_path {home / 'tmp' / kind};" for kind in _TEMP)
        upstreams = _upstream("api", [self.api_port]) + _upstream(
            "query", [self.query_port, *self.more_query_ports]
        )
        return f"""\
# Written by orders_stack.gateway at each start; the routing is {ROUTES}.
worker_processes 1;
pid {home / "nginx.pid"};
error_log stderr warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log /dev/stdout;
    default_type application/octet-stream;
    server_tokens off;
{temp}

{upstreams}
    include {ROUTES};
}}
"""

    def listen(self) -> str:
        host = f"[{self.bind_host}]" if ":" in self.bind_host else self.bind_host
        return f"listen {host}:{self.port};\nset $orders_openapi_dir {OPENAPI_DIR};\n"

    def write_config(self) -> Path:
        """Write nginx.conf and listen.conf under the data dir; returns the main file."""
        home = self.home
        for kind in _TEMP:
            (home / "tmp" / kind).mkdir(parents=True, exist_ok=True)
        (home / "listen.conf").write_text(self.listen())
        main = home / "nginx.conf"
        main.write_text(self.config())
        return main

    def argv(self, nginx: str, main: Path) -> list[str]:
        # -p: relative paths (listen.conf) resolve here; -e: the log of nginx's own start.
        return [nginx, "-p", f"{self.home}/", "-c", str(main), "-e", "stderr", "-g", "daemon off;"]

    def check(self) -> None:
        """`nginx -t` on the written configuration: raises with nginx's reason."""
        nginx = find_nginx()
        main = self.write_config()
        checked = subprocess.run([*self.argv(nginx, main)[:-2], "-t", "-q"], capture_output=True, text=True)
        if checked.returncode != 0:
            raise RuntimeError(f"nginx refuses {main}: {checked.stderr.strip()}")

    def start(self) -> "Gateway":
        nginx = find_nginx()
        main = self.write_config()
        proc = Proc(
            "gateway", self.argv(nginx, main), self.data_dir / "logs" / "gateway.log", env=dict(os.environ)
        ).start()
        self.procs.append(proc)
        try:
            health = f"{self.url}/health"
            wait_until("gateway", lambda: httpx.get(health, timeout=2).status_code == 200, 30, [proc])
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()

    def __enter__(self) -> "Gateway":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
