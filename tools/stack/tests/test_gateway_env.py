"""With the gateway, the services name it: Location headers, the dashboard's form, CORS."""

from pathlib import Path

import pytest

from orders_stack import Infra, Stack


@pytest.fixture(autouse=True)
def _no_outer_values(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("QUERY_PUBLIC_URL", "API_PUBLIC_URL", "CORS_ORIGINS", "BIND_HOST"):
        monkeypatch.delenv(name, raising=False)


def test_without_a_gateway_the_services_name_each_other(tmp_path: Path) -> None:
    env = Stack(Infra(tmp_path), api_port=8000, query_port=8001).service_env()
    assert env["QUERY_PUBLIC_URL"] == "http://127.0.0.1:8001"
    assert env["API_PUBLIC_URL"] == "http://127.0.0.1:8000"
    assert "5000" not in env["CORS_ORIGINS"]


def test_with_a_gateway_they_name_it(tmp_path: Path) -> None:
    stack = Stack(Infra(tmp_path), api_port=8000, query_port=8001, gateway_port=5000)
    assert stack.gateway_url == "http://127.0.0.1:5000"
    env = stack.service_env()
    assert env["QUERY_PUBLIC_URL"] == "http://127.0.0.1:5000", "Location headers"
    assert env["API_PUBLIC_URL"] == "http://127.0.0.1:5000", "the dashboard's order form"
    origins = env["CORS_ORIGINS"].split(",")
    assert {"http://127.0.0.1:5000", "http://localhost:5000", "http://127.0.0.1:8001"} <= set(origins)


def test_a_value_set_outside_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUERY_PUBLIC_URL", "https://orders.example")
    env = Stack(Infra(tmp_path), gateway_port=5000).service_env()
    assert env["QUERY_PUBLIC_URL"] == "https://orders.example"
