"""The Helm chart under deploy/helm/orders, rendered offline by Helm itself (`make helm`).

`helm lint` and `helm template` run with the default values and with values-cluster.yaml, Helm's
homes in a temporary folder; kubecheck (infra/kubecheck, `make kubecheck`) decodes every rendered
object strictly into its Kubernetes API type; the properties that matter are then read off the
render: probes, resources, a PodDisruptionBudget per service, grace periods longer than the
services' own shutdown, autoscaling within the orders topic's partitions, no secret in the chart,
containers that run unprivileged, and only variables the services' settings read.
"""

import inspect
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from orders_api.settings import Settings as ApiSettings
from orders_kafka.clients import stop_bounded
from orders_processor import consumer
from orders_processor.settings import Settings as ProcessorSettings
from orders_query.settings import Settings as QuerySettings

HELM = os.environ.get("HELM", "")
KUBECHECK = os.environ.get("KUBECHECK", "")

pytestmark = [
    pytest.mark.static,
    pytest.mark.skipif(
        not (HELM and KUBECHECK),
        reason="HELM and KUBECHECK are not set: `make test` sets them (after `make helm kubecheck`)",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "orders"
VALUES = {"default": None, "cluster": CHART / "values-cluster.yaml"}
SETTINGS: dict[str, type[BaseSettings]] = {
    "api": ApiSettings,
    "processor": ProcessorSettings,
    "query": QuerySettings,
}
IMAGE_USER = 10001
"""The Dockerfile's `USER 10001:10001`."""

Manifest = dict[str, Any]


def _tool(path: str, target: str) -> str:
    if not Path(path).is_file():
        pytest.fail(f"{path} is missing: run `make {target}` (make test builds it)")
    return path


def helm(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Helm, offline: its cache, configuration and data homes in `tmp`, no repository known."""
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(tmp / "cache"),
        "HELM_CONFIG_HOME": str(tmp / "config"),
        "HELM_DATA_HOME": str(tmp / "data"),
    }
    return subprocess.run(
        [_tool(HELM, "helm"), *args], capture_output=True, text=True, env=env, check=False, timeout=120
    )


def values_args(name: str) -> list[str]:
    path = VALUES[name]
    return ["--values", str(path)] if path else []


def template(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return helm(tmp, "template", "orders", str(CHART), "--namespace", "orders", *args)


def kubecheck(stream: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool(KUBECHECK, "kubecheck")], input=stream, capture_output=True, text=True, check=False, timeout=60
    )


@pytest.fixture(scope="module", params=list(VALUES))
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(values name, the render)."""
    name: str = request.param
    result = template(tmp_path_factory.mktemp("helm"), *values_args(name))
    assert result.returncode == 0, result.stderr
    return name, result.stdout


@pytest.fixture(scope="module")
def objects(rendered: tuple[str, str]) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(rendered[1]) if doc]


def of_kind(objects: list[Manifest], kind: str) -> dict[str, Manifest]:
    """The objects of a kind by their component label (api, processor, query)."""
    return {o["metadata"]["labels"]["app.kubernetes.io/component"]: o for o in objects if o["kind"] == kind}


def containers(objects: list[Manifest]) -> Iterator[tuple[str, Manifest, Manifest]]:
    """(component, pod spec, container) of every Deployment's containers."""
    for component, deployment in of_kind(objects, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            yield component, pod, container


def env_of(container: Manifest) -> dict[str, Manifest]:
    return {item["name"]: item for item in container.get("env", [])}


@pytest.mark.parametrize("name", list(VALUES))
def test_the_chart_lints(name: str, tmp_path: Path) -> None:
    result = helm(tmp_path, "lint", "--strict", str(CHART), *values_args(name))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_object_decodes_strictly_into_its_kubernetes_type(rendered: tuple[str, str]) -> None:
    result = kubecheck(rendered[1])
    assert result.returncode == 0, result.stderr
    assert "objects decoded strictly" in result.stdout


def test_kubecheck_rejects_unknown_fields_and_kinds(rendered: tuple[str, str]) -> None:
    """The check can fail: a misspelt field, an unquoted number for a string, a field of a
    ScaledObject it does not know, a kind it does not know."""
    stream = rendered[1]
    misspelt = stream.replace("readinessProbe:", "readinesProbe:", 1)
    result = kubecheck(misspelt)
    assert result.returncode != 0
    assert 'unknown field "readinesProbe"' in result.stderr
    # The API server reads a number where a string belongs as an error too.
    assert 'value: "8000"' in stream
    result = kubecheck(stream.replace('value: "8000"', "value: 8000", 1))
    assert result.returncode != 0
    assert "cannot unmarshal number" in result.stderr
    scaled = (
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: x}\n"
        "spec: {scaleTargetRef: {name: x}, maxReplicaCount: 3, maxReplicas: 3,"
        " triggers: [{type: kafka, metadata: {}}]}\n"
    )
    result = kubecheck(scaled)
    assert result.returncode != 0
    assert "maxReplicas" in result.stderr
    result = kubecheck(stream + "\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: x}\n")
    assert result.returncode != 0
    assert 'unknown apiVersion/kind "v1 Secret"' in result.stderr


def test_one_deployment_per_service_from_its_image_on_its_port(objects: list[Manifest]) -> None:
    deployments = of_kind(objects, "Deployment")
    assert set(deployments) == set(SETTINGS)
    for component, _, container in containers(objects):
        assert container["name"] == component
        assert re.search(rf"orders-{component}:[\w.-]+$", container["image"]), container["image"]
        port = SETTINGS[component].model_fields[f"{component}_port"].default
        assert [p["containerPort"] for p in container["ports"]] == [port]
        assert env_of(container)[f"{component.upper()}_PORT"]["value"] == str(port)


def test_every_container_has_its_probes_and_resources(objects: list[Manifest]) -> None:
    for component, _, container in containers(objects):
        ready, live = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
        assert (ready["path"], ready["port"]) == ("/health/ready", "http"), component
        assert (live["path"], live["port"]) == ("/health/live", "http"), component
        assert [p["name"] for p in container["ports"]] == ["http"]
        for kind in ("requests", "limits"):
            assert set(container["resources"][kind]) >= {"cpu", "memory"}, f"{component} {kind}"


def test_every_container_runs_unprivileged_on_a_read_only_root(objects: list[Manifest]) -> None:
    for component, pod, container in containers(objects):
        security = {**pod.get("securityContext", {}), **container["securityContext"]}
        assert security["runAsNonRoot"] is True, component
        assert security["runAsUser"] == IMAGE_USER, component
        assert security["readOnlyRootFilesystem"] is True, component
        assert security["allowPrivilegeEscalation"] is False, component
        assert security["capabilities"]["drop"] == ["ALL"], component
        assert "add" not in security["capabilities"], component
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], f"{component}: /tmp is an emptyDir"
        assert pod["serviceAccountName"], component


def test_each_service_has_a_pdb_and_a_cluster_ip_service_selecting_its_pods(objects: list[Manifest]) -> None:
    deployments = of_kind(objects, "Deployment")
    budgets, services = of_kind(objects, "PodDisruptionBudget"), of_kind(objects, "Service")
    assert set(budgets) == set(SETTINGS)
    assert set(services) == set(SETTINGS), "api, query and the processor's metrics"
    for component, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = budgets[component]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), f"{component}'s PDB selects its pods"
        budget = budgets[component]["spec"]
        assert "maxUnavailable" in budget or "minAvailable" in budget
        service = services[component]["spec"]
        assert service["type"] == "ClusterIP"
        assert service["selector"].items() <= labels.items()
        assert [p["targetPort"] for p in service["ports"]] == ["http"]


def _web_shutdown_s() -> float:
    """uvicorn's graceful shutdown (orders_web.serving) plus the lifespan's bounded Kafka stop."""
    serving = (ROOT / "libs" / "web" / "src" / "orders_web" / "serving.py").read_text()
    (graceful,) = re.findall(r"timeout_graceful_shutdown=(\d+)", serving)
    stop: float = inspect.signature(stop_bounded).parameters["timeout"].default
    return float(graceful) + stop


def test_grace_periods_outlast_each_services_shutdown(objects: list[Manifest]) -> None:
    stop: float = inspect.signature(stop_bounded).parameters["timeout"].default
    for component, pod, container in containers(objects):
        grace = pod["terminationGracePeriodSeconds"]
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        if component == "processor":
            drain_ms = int(env_of(container)["PROCESSOR_DRAIN_TIMEOUT_MS"]["value"])
            # KeyedConsumer's stop: the drain, the final commit, then the consumer's bounded stop.
            shutdown = drain_ms / 1000 + consumer._COMMIT_TIMEOUT + stop
        else:
            shutdown = _web_shutdown_s()
        assert grace > pre_stop + shutdown, f"{component}: {grace} s for {pre_stop} + {shutdown} s"


def test_the_chart_refuses_a_grace_period_shorter_than_the_drain(tmp_path: Path) -> None:
    result = template(tmp_path, "--set", "processor.drainTimeoutMs=45000")
    assert result.returncode != 0
    assert "processor.terminationGracePeriodSeconds" in result.stderr


def test_api_and_query_scale_on_an_hpa(objects: list[Manifest]) -> None:
    deployments = of_kind(objects, "Deployment")
    hpas = of_kind(objects, "HorizontalPodAutoscaler")
    assert set(hpas) == {"api", "query"}
    for component, hpa in hpas.items():
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", deployments[component]["metadata"]["name"])
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert "replicas" not in deployments[component]["spec"], "the HPA owns the replica count"


def test_keda_scales_the_processors_within_the_partitions(
    rendered: tuple[str, str], objects: list[Manifest]
) -> None:
    name = rendered[0]
    scaled = [o for o in objects if o["kind"] == "ScaledObject"]
    processor = of_kind(objects, "Deployment")["processor"]
    if name == "default":
        assert scaled == [], "KEDA is off by default (its CRDs may be missing)"
        assert processor["spec"]["replicas"] >= 1
        return
    (so,) = scaled
    env = env_of(processor["spec"]["template"]["spec"]["containers"][0])
    assert so["spec"]["scaleTargetRef"]["name"] == processor["metadata"]["name"]
    assert "replicas" not in processor["spec"], "KEDA owns the replica count"
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == env["KAFKA_CONSUMER_GROUP"]["value"]
    assert trigger["metadata"]["topic"] == env["KAFKA_ORDERS_TOPIC"]["value"]
    assert trigger["metadata"]["bootstrapServers"] == env["KAFKA_BOOTSTRAP_SERVERS"]["value"]
    partitions = int(env["KAFKA_TOPIC_PARTITIONS"]["value"])
    assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"] <= partitions


def test_the_render_fails_when_keda_may_scale_beyond_the_partitions(tmp_path: Path) -> None:
    ok = template(tmp_path, "--set", "processor.keda.enabled=true,processor.keda.maxReplicaCount=6")
    assert ok.returncode == 0, ok.stderr
    result = template(
        tmp_path,
        "--set",
        "processor.keda.enabled=true,processor.keda.maxReplicaCount=7,kafka.topics.partitions=6",
    )
    assert result.returncode != 0
    assert "maxReplicaCount (7) is above kafka.topics.partitions (6)" in result.stderr


_SECRET_LOOKING = re.compile(
    r"password|passwd|secret|token=|api[_-]?key|://[^/@\s]*:[^/@\s]*@", re.IGNORECASE
)


def test_no_secret_is_in_the_chart_or_its_render(rendered: tuple[str, str], objects: list[Manifest]) -> None:
    assert not [o for o in objects if o["kind"] == "Secret"]
    for component, _, container in containers(objects):
        for name, item in env_of(container).items():
            if "value" in item:
                assert not _SECRET_LOOKING.search(item["value"]), f"{component} {name}={item['value']}"
            else:
                assert set(item["valueFrom"]) == {"secretKeyRef"}, f"{component} {name}"
    if rendered[0] == "cluster":
        for _, _, container in containers(objects):
            assert env_of(container)["REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"], "from a Secret"
    for path in CHART.glob("values*.yaml"):
        for line in path.read_text().splitlines():
            if not line.lstrip().startswith("#"):
                assert not re.search(r"://[^/@\s]*:[^/@\s]*@", line), f"{path.name}: {line}"


def test_containers_set_only_variables_their_settings_read(objects: list[Manifest]) -> None:
    for component, _, container in containers(objects):
        read = {name.upper() for name in SETTINGS[component].model_fields}
        unknown = {n for n in env_of(container) if n not in read and not n.startswith("OTEL_")}
        assert not unknown, f"{component} sets variables nothing reads: {unknown}"


def test_pods_listen_on_every_interface_behind_oidc(objects: list[Manifest]) -> None:
    """The services refuse a non-loopback bind without AUTH_MODE set (orders_web.auth.check_bind):
    the api and the query service get oidc with an issuer and an audience."""
    for component, _, container in containers(objects):
        env = env_of(container)
        assert env["BIND_HOST"]["value"] == "0.0.0.0"
        if component != "processor":
            assert env["AUTH_MODE"]["value"] == "oidc"
            assert env["OIDC_ISSUER"]["value"].startswith("https://")
            assert env["OIDC_AUDIENCE"]["value"]


def test_topics_keep_a_copy_per_lost_broker_on_a_cluster(
    rendered: tuple[str, str], objects: list[Manifest]
) -> None:
    """With three replicas an acks=all send waits for two (one broker may be lost); by default
    the chart leaves min.insync.replicas to the brokers. Every service that creates topics
    gets the same values, and they fit: the settings refuse more in sync than replicas."""
    for component, _, container in containers(objects):
        env = env_of(container)
        if "KAFKA_REPLICATION_FACTOR" not in env:
            continue
        factor = int(env["KAFKA_REPLICATION_FACTOR"]["value"])
        in_sync = env.get("KAFKA_MIN_INSYNC_REPLICAS", {}).get("value")
        if rendered[0] == "cluster":
            assert (factor, in_sync) == (3, "2"), component
        else:
            assert in_sync is None, f"{component}: the brokers' default unless asked"


def test_every_service_reads_the_same_redis_layout(
    rendered: tuple[str, str], objects: list[Manifest]
) -> None:
    """One Redis by default (one shard, no WAIT); the cluster values: a Redis Cluster in six
    shards, writes confirmed by a replica. The settings accept what every container gets, and
    the status topic has a partition per shard at least (one relay per shard)."""
    layouts = set()
    for component, _, container in containers(objects):
        env = {name: item["value"] for name, item in env_of(container).items() if "value" in item}
        SETTINGS[component].model_validate(
            {k.lower(): v for k, v in env.items() if k.lower() in SETTINGS[component].model_fields}
        )
        layouts.add((env["REDIS_CLUSTER"], env["REDIS_SHARDS"], env["REDIS_WAIT_REPLICAS"]))
        if "KAFKA_TOPIC_PARTITIONS" in env:
            assert int(env["KAFKA_TOPIC_PARTITIONS"]) >= int(env["REDIS_SHARDS"]), component
    assert layouts == ({("1", "6", "1")} if rendered[0] == "cluster" else {("0", "1", "0")})
