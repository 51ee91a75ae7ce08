"""docker compose's cluster profile: deploy/compose/cluster.env over docker-compose.yml runs the
topology of `make up KAFKA_BROKERS=3 REDIS_CLUSTER=1` (three KRaft brokers, a Redis Cluster of
three masters with a replica each, three processors, two query services), and nothing set is
still the single-node stack.

The loader does not apply profiles: `running` picks the services `docker compose` would start.
"""

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from orders_stack.kafkanode import CLUSTER_BROKER_CONFIG
from orders_stack.rediscluster import NODE_CONFIG, NODES

from .test_deploy_files import COMPOSE, ROOT, SETTINGS, env_names, environment, load_compose

pytestmark = pytest.mark.static

CLUSTER_ENV = ROOT / "deploy" / "compose" / "cluster.env"
HELM_CLUSTER_VALUES = ROOT / "deploy" / "helm" / "orders" / "values-cluster.yaml"
BROKERS = [f"kafka-{n}" for n in (1, 2, 3)]
REDIS_NODES = [f"redis-{n}" for n in range(1, NODES + 1)]
KAFKA_CLIENTS = ("api", "processor")
"""The services that talk to Kafka (the query service reads Redis alone)."""


def cluster_env() -> dict[str, str]:
    """deploy/compose/cluster.env's variables (plain NAME=value lines, as compose reads them)."""
    found = {}
    for line in CLUSTER_ENV.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            match = re.fullmatch(r"([A-Z][A-Z0-9_]*)=([^\s'\"#$]+)", line)
            assert match, f"not a plain NAME=value line: {line!r}"
            found[match.group(1)] = match.group(2)
    return found


def running(model: dict[str, Any], profiles: set[str]) -> dict[str, int]:
    """The services `docker compose` starts with `profiles` on, and their containers."""
    found = {}
    for name, service in model["services"].items():
        if not service.get("profiles") or set(service["profiles"]) & profiles:
            replicas = int(service.get("deploy", {}).get("replicas", 1))
            if replicas:
                found[name] = replicas
    return found


def settings_of(name: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The service's settings as it reads them from exactly `env`."""
    settings: type[BaseSettings] = SETTINGS[name]
    for variable in env_names(settings):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    return settings()


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    return load_compose(variables=cluster_env())


@pytest.fixture(scope="module")
def single() -> dict[str, Any]:
    return load_compose()


def test_the_cluster_env_turns_the_profile_on() -> None:
    assert cluster_env()["COMPOSE_PROFILES"] == "cluster"


def test_the_cluster_runs_the_local_clusters_topology(cluster: dict[str, Any]) -> None:
    profiles = set(cluster_env()["COMPOSE_PROFILES"].split(","))
    expected = {name: 1 for name in [*BROKERS, *REDIS_NODES, "redis-cluster", "api", "gateway"]}
    assert running(cluster, profiles) == {**expected, "processor": 3, "query": 2}


def test_nothing_set_is_the_single_node_stack(
    single: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert running(single, set()) == {
        name: 1 for name in ("kafka", "redis", "api", "processor", "query", "gateway")
    }
    for name in SETTINGS:
        env = environment(single["services"][name])
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        settings = settings_of(name, env, monkeypatch)
        assert settings.redis_cluster is False
        assert (settings.redis_shards, settings.redis_wait_replicas) == (1, 0), "the settings' defaults"
        if name in KAFKA_CLIENTS:
            assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
            assert settings.kafka_replication_factor == 1
            # Set, as a variable cannot be unset by an env file; the single broker's default is 1.
            assert settings.kafka_min_insync_replicas == 1
    assert [p["published"] for p in single["services"]["query"]["ports"]] == ["8001"]


def test_the_brokers_are_one_kraft_cluster(cluster: dict[str, Any]) -> None:
    services = cluster["services"]
    envs = [environment(services[name]) for name in BROKERS]
    assert len({env["CLUSTER_ID"] for env in envs}) == 1
    assert envs[0]["CLUSTER_ID"] != environment(services["kafka"])["CLUSTER_ID"]
    assert [env["KAFKA_NODE_ID"] for env in envs] == ["1", "2", "3"]
    voters = [f"{n}@{name}:9093" for n, name in enumerate(BROKERS, 1)]
    for name, env in zip(BROKERS, envs, strict=True):
        broker = services[name]
        assert broker["image"] == services["kafka"]["image"]
        assert broker["healthcheck"] == services["kafka"]["healthcheck"]
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",") == voters
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        for setting in CLUSTER_BROKER_CONFIG:  # as `make up KAFKA_BROKERS=3` runs them
            key, value = setting.split("=", 1)
            assert env.get("KAFKA_" + key.upper().replace(".", "_")) == value, f"{name}: {setting}"
        assert "ports" not in broker, "reached inside compose's network only"
    assert {services[name]["volumes"][0]["source"] for name in BROKERS} == {f"{b}-data" for b in BROKERS}


def test_every_redis_node_has_the_local_clusters_settings(cluster: dict[str, Any]) -> None:
    services = cluster["services"]
    for name in REDIS_NODES:
        node = services[name]
        assert node["image"] == services["redis"]["image"]
        command = node["command"]
        assert command[0] == "redis-server"
        options = [(command[i], command[i + 1]) for i in range(1, len(command), 2)]
        for setting in NODE_CONFIG:
            key, value = shlex.split(setting)
            assert (f"--{key}", value) in options, f"{name}: {setting}"
        assert node["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
        assert [(v["source"], v["target"]) for v in node["volumes"]] == [(f"{name}-data", "/data")]
        assert "ports" not in node, "reached inside compose's network only"


def test_the_create_job_joins_the_six_nodes_once(cluster: dict[str, Any]) -> None:
    job = cluster["services"]["redis-cluster"]
    assert job["restart"] == "no"
    shell, script, *nodes = job["command"]
    assert (shell, nodes) == ("sh", [f"{name}:6379" for name in REDIS_NODES])
    (mount,) = job["volumes"]
    assert mount["target"] == script
    text = Path(mount["source"]).read_text()
    assert re.search(r"redis-cli --cluster create \$addrs --cluster-replicas 1 --cluster-yes$", text, re.M)
    assert "getent hosts" in text, "redis-cli --cluster create and CLUSTER MEET want addresses"
    assert "cluster_state:ok" in text
    conditions = {name: how["condition"] for name, how in job["depends_on"].items()}
    assert conditions == dict.fromkeys(REDIS_NODES, "service_healthy"), "every node answers first"


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_each_service_is_told_of_the_cluster(
    cluster: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = environment(cluster["services"][name])
    settings = settings_of(name, env, monkeypatch)
    assert settings.redis_cluster is True
    assert re.fullmatch(r"redis://(redis-\d):6379/0", settings.redis_url)
    assert settings.redis_url.split("/")[2].split(":")[0] in REDIS_NODES, "a seed node of the cluster"
    shards = yaml.safe_load(HELM_CLUSTER_VALUES.read_text())["redis"]["shards"]
    assert settings.redis_shards == shards == 6, "two shards a master, as the Helm chart's example"
    assert settings.redis_shards % (NODES // 2) == 0, "a multiple of the masters"
    assert settings.redis_wait_replicas == 1
    if name in KAFKA_CLIENTS:
        assert settings.kafka_bootstrap_servers.split(",") == [f"{b}:9092" for b in BROKERS]
        assert (settings.kafka_replication_factor, settings.kafka_min_insync_replicas) == (3, 2)
        # relay_topic.check_partitions: each shard's status relay needs partitions of its own
        assert settings.kafka_topic_partitions >= settings.redis_shards
        assert settings.kafka_topic_partitions % settings.redis_shards == 0


def test_the_services_wait_for_the_cluster_only_when_it_runs(cluster: dict[str, Any]) -> None:
    services = cluster["services"]
    expected = {
        name: {"redis-cluster"} | ({*BROKERS} if name in KAFKA_CLIENTS else set()) for name in SETTINGS
    }
    for name, needs in expected.items():
        depends = services[name]["depends_on"]
        optional = {dep for dep, how in depends.items() if not how["required"]}
        assert optional == needs, name
        for dep in needs:
            want = "service_completed_successfully" if dep == "redis-cluster" else "service_healthy"
            assert depends[dep]["condition"] == want
        # kept for the single-node stack: compose does not wait for a service it runs none of
        assert int(services["redis"]["deploy"]["replicas"]) == 0
        assert depends["redis"]["required"] is True


def test_the_query_replicas_get_a_host_port_each(cluster: dict[str, Any]) -> None:
    (port,) = cluster["services"]["query"]["ports"]
    env = cluster_env()
    first, last = (int(p) for p in env["QUERY_HOST_PORTS"].split("-"))
    assert port["published"] == env["QUERY_HOST_PORTS"]
    assert port["host_ip"] == "127.0.0.1"
    assert last - first + 1 == int(env["QUERY_REPLICAS"])
    assert first == 8001, "the first is QUERY_PORT's default"
    conf = (ROOT / "infra" / "gateway" / "nginx.conf").read_text()
    assert "server query:8001 resolve;" in conf, "re-resolved: Docker's DNS names every replica"


def test_every_port_of_the_cluster_is_on_loopback(cluster: dict[str, Any]) -> None:
    for name, service in cluster["services"].items():
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond loopback"


def test_the_env_file_sets_only_what_the_compose_file_reads() -> None:
    text = COMPOSE.read_text()
    unused = [name for name in cluster_env() if name != "COMPOSE_PROFILES" and "${" + name not in text]
    assert not unused, f"cluster.env sets variables docker-compose.yml never reads: {unused}"
