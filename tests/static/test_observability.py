"""The alert rules and the Grafana dashboard under deploy/: the rules pass promtool (built from
the Go module proxy by `make promtool`), and every metric they and the dashboard name is one the
services export (read from the services' own registries, not from a list kept by hand)."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric

pytestmark = pytest.mark.static

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.rules.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "orders.json"
_SERVICE_METRIC = re.compile(r"\b(?:api|query|processor)_[a-z0-9_]+\b")


def promtool() -> str:
    path = os.environ.get("PROMTOOL") or str(ROOT / ".cache" / "bin" / "promtool")
    if not Path(path).is_file():
        pytest.fail(f"promtool missing at {path}: run `make promtool` (make test builds it)")
    return path


def test_the_alert_rules_pass_promtool_check() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_alert_fires_on_what_it_is_about() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", "alerts.test.yml"], capture_output=True, text=True, cwd=RULES.parent
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _sample_names(metric: Metric) -> set[str]:
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(metric.type, [""])
    return {metric.name + suffix for suffix in suffixes}


def exported_names() -> set[str]:
    """Every sample name the three services' registries export (metric objects made, no server)."""
    from orders_api.app import create_app as api_app
    from orders_processor.health import create_health_app
    from orders_processor.relay import Relay
    from orders_processor.settings import Settings as ProcessorSettings
    from orders_processor.worker import Worker
    from orders_query.app import create_app as query_app
    from orders_readmodel.store import OrderStore

    processor_settings = ProcessorSettings()
    store = OrderStore.connect(processor_settings)
    worker = Worker(processor_settings, store)
    apps = [api_app(), query_app(), create_health_app(worker, relay=Relay(processor_settings, store))]
    names: set[str] = set()
    for app in apps:
        families = [metric.name for metric in app.state.metrics.registry.collect()]
        assert len(families) == len(set(families)), f"a metric family exported twice: {sorted(families)}"
        for metric in app.state.metrics.registry.collect():
            names |= _sample_names(metric)
    return names


def referenced_names() -> dict[str, set[str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    return {
        "dashboard": set(_SERVICE_METRIC.findall("\n".join(exprs))),
        "alert rules": set(_SERVICE_METRIC.findall(RULES.read_text())),
    }


async def test_the_dashboard_and_the_rules_name_only_metrics_that_exist() -> None:
    exported = exported_names()
    assert {"processor_consumer_lag", "api_kafka_send_duration_seconds_count"} <= exported
    for where, names in referenced_names().items():
        assert names, f"the {where} name no metric"
        assert not names - exported, f"the {where} name metrics no service exports: {names - exported}"
