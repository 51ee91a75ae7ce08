"""The front door's nginx configuration: both of its forms load (`nginx -t`), and the routing they
share says what docs/api.md promises (writes to the api, streams unbuffered, headers forwarded)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from orders_api.settings import Settings as ApiSettings
from orders_contract.settings import GatewaySettings
from orders_query.settings import Settings as QuerySettings
from orders_stack.gateway import OPENAPI_DIR, ROUTES, Gateway, find_nginx

pytestmark = pytest.mark.static

GATEWAY_DIR = ROUTES.parent


def nginx_test(main: Path, prefix: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [find_nginx(), "-p", f"{prefix}/", "-c", str(main), "-e", "stderr", "-t", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_stacks_configuration_loads(tmp_path: Path) -> None:
    gateway = Gateway(tmp_path, api_port=18000, query_port=18001, port=15000)
    gateway.check()
    text = gateway.config()
    assert f"include {ROUTES};" in text
    assert "server 127.0.0.1:18000;" in text
    assert "server 127.0.0.1:18001;" in text
    assert str(tmp_path / "gateway" / "nginx.pid") in text, "its pid file is under the data dir"
    assert "/etc/nginx" not in text
    assert "/var/" not in text
    assert (tmp_path / "gateway" / "listen.conf").read_text() == (
        f"listen 127.0.0.1:15000;\nset $orders_openapi_dir {OPENAPI_DIR};\n"
    ), "the front door's OpenAPI document is the repository's"
    assert (OPENAPI_DIR / "front-door.json").is_file()


def test_reads_are_balanced_over_every_query_instance(tmp_path: Path) -> None:
    """A scaled-out stack (the cluster profile's two query instances): the `query` upstream
    names each, the `api` upstream only the api."""
    gateway = Gateway(tmp_path, api_port=18000, query_port=18001, port=15000, more_query_ports=(18003,))
    gateway.check()
    upstreams = dict(re.findall(r"upstream (\w+) \{(.*?)\}", gateway.config(), re.S))
    servers = {name: re.findall(r"server (\S+);", body) for name, body in upstreams.items()}
    assert servers == {"api": ["127.0.0.1:18000"], "query": ["127.0.0.1:18001", "127.0.0.1:18003"]}


def test_it_listens_on_bind_host() -> None:
    assert (
        Gateway(Path("/x"), 1, 2, port=5000, bind_host="0.0.0.0")
        .listen()
        .startswith("listen 0.0.0.0:5000;\n")
    )
    assert Gateway(Path("/x"), 1, 2, port=5000, bind_host="::1").listen().startswith("listen [::1]:5000;\n")
    assert Gateway(Path("/x"), 1, 2, port=5000, bind_host="0.0.0.0").url == "http://127.0.0.1:5000"


def test_the_compose_configuration_loads(tmp_path: Path) -> None:
    """docker compose's nginx.conf, with the service names (which resolve only in compose's
    network) and its pid file pointed here."""
    for name in ("nginx.conf", "routes.conf", "listen.conf"):
        shutil.copy(GATEWAY_DIR / name, tmp_path / name)
    main = tmp_path / "nginx.conf"
    text = main.read_text()
    api, query = (
        ApiSettings.model_fields["api_port"].default,
        QuerySettings.model_fields["query_port"].default,
    )
    assert f"server api:{api} resolve;" in text
    assert f"server query:{query} resolve;" in text
    assert "include routes.conf;" in text
    # Debian's nginx (1.22) predates `resolve` on upstream servers (1.27.3, the image's).
    text = text.replace(" resolve;", ";")
    port = GatewaySettings.model_fields["gateway_port"].default
    listen = [
        line for line in (GATEWAY_DIR / "listen.conf").read_text().splitlines() if not line.startswith("#")
    ]
    assert listen == [f"listen {port};", "set $orders_openapi_dir /etc/nginx/openapi;"]
    text = text.replace("server api:", "server 127.0.0.1:").replace("server query:", "server 127.0.0.1:")
    text = text.replace("pid /tmp/nginx.pid;", f"pid {tmp_path / 'nginx.pid'};")
    temp = "".join(f"    {kind}_temp_path {tmp_path / kind};\n" for kind in ("client_body", "proxy"))
    main.write_text(text.replace("http {\n", "http {\n" + temp, 1))
    result = nginx_test(main, tmp_path)
    assert result.returncode == 0, result.stderr


def routes() -> str:
    return ROUTES.read_text()


def test_writes_go_to_the_api_and_everything_else_to_the_query_service() -> None:
    text = routes()
    (mapping,) = re.findall(r"map \"\$request_method \$uri\" \$orders_upstream \{(.*?)\n\}", text, re.DOTALL)
    table = dict(re.findall(r'^\s*"?(default|[^"]+)"?\s+(\w+);$', mapping, re.MULTILINE))
    assert table.pop("default") == "query"
    assert set(table.values()) == {"api"}

    def upstream(method: str, path: str) -> str:
        for pattern in table:
            if re.match(pattern.removeprefix("~"), f"{method} {path}"):
                return "api"
        return "query"

    for method, path in [
        ("POST", "/api/orders"),
        ("POST", "/api/orders/batch"),
        ("POST", "/api/orders/0193a-b/cancel"),
        ("GET", "/asyncapi"),
        ("GET", "/asyncapi.json"),
        ("GET", "/asyncapi/assets/viewer.js"),
        ("OPTIONS", "/api/orders"),
    ]:
        assert upstream(method, path) == "api", (method, path)
    for method, path in [
        ("GET", "/api/orders"),
        ("GET", "/api/orders/0193a-b"),
        ("GET", "/api/orders/user/1"),
        ("GET", "/api/orders/status/COMPLETED"),
        ("GET", "/api/orders/0193a-b/history"),
        ("GET", "/api/orders/events"),
        ("GET", "/dashboard"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("GET", "/asyncapis"),
    ]:
        assert upstream(method, path) == "query", (method, path)
    assert re.search(r"location = / \{\s*return 302 /docs;", text)
    assert re.search(r"location = /health \{[^}]*return 200", text)
    assert re.search(r"location = /metrics \{\s*return 404;", text), "metrics stay on the internal network"
    assert re.search(r"location = /openapi.json \{[^}]*try_files /front-door.json", text)
    assert "merge_slashes off;" in text, "routed on the path as the services will see it"


def test_live_streams_pass_unbuffered_with_their_headers() -> None:
    text = routes()
    (stream,) = re.findall(
        r"location ~ \^/api/orders/\(events\|\[\^/\]\+/events\)/\?\$ \{(.*?)\}", text, re.DOTALL
    )
    assert "proxy_pass http://query;" in stream
    assert "proxy_buffering off;" in stream
    assert re.search(r"proxy_read_timeout 1h;", stream)
    # A proxy_set_header in a location would drop every one set in the server block.
    assert "proxy_set_header" not in stream
    server = text[text.index("server {") :]
    for header in (
        "proxy_http_version 1.1;",
        "proxy_set_header X-Forwarded-For $remote_addr;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header X-Forwarded-Host $http_host;",
        "proxy_set_header Last-Event-ID $http_last_event_id;",
    ):
        assert header in server
    assert text.count("proxy_set_header") == server.count("proxy_set_header"), "all in the server block"
