"""docs/configuration.md, written from the settings classes: `make config-doc`
(`python -m orders_stack.configdoc [--check]`).

One table a group: each pydantic-settings class of orders_contract.settings, then what each
service's own Settings adds; a variable's default and description are the field's own, and
"read by" names the services whose settings include it. tests/static/test_docs.py fails when
the committed page is not what this writes now.
"""

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from orders_api.settings import Settings as ApiSettings
from orders_contract import settings as contract
from orders_processor.settings import Settings as ProcessorSettings
from orders_query.settings import Settings as QuerySettings

__all__ = ["GROUPS", "PAGE", "SERVICES", "render"]

PAGE = Path(__file__).resolve().parents[4] / "docs" / "configuration.md"

SERVICES: dict[str, type[BaseSettings]] = {
    "api": ApiSettings,
    "processor": ProcessorSettings,
    "query": QuerySettings,
}

GROUPS: list[tuple[str, type[BaseSettings]]] = [
    ("Kafka", contract.KafkaSettings),
    ("Redis", contract.RedisSettings),
    ("HTTP servers", contract.HttpSettings),
    ("Access control", contract.AuthSettings),
    ("Logs", contract.LogSettings),
    ("Tracing", contract.TracingSettings),
    ("The gateway", contract.GatewaySettings),
]
"""The shared groups, in the page's order (every class orders_contract.settings exports)."""

_INTRO = """\
# Configuration

<!-- Written by `make config-doc` (tools/stack/src/orders_stack/configdoc.py) from the
settings classes: change a setting there, then run it; tests/static/test_docs.py checks. -->

Environment variables (upper case, as below), read by pydantic-settings; the same names are
used by `make up`, `docker-compose.yml` and the tests. The shared groups are declared once in
`libs/contract/src/orders_contract/settings.py`, each service's own in its `settings.py`.
`make up` passes your environment through to the services, except that it points
`KAFKA_BOOTSTRAP_SERVERS`, `REDIS_URL` and the ports at the servers it starts (and, with the
gateway running, `QUERY_PUBLIC_URL` and `API_PUBLIC_URL` at the gateway);
`docker-compose.yml` passes the variables it lists (add others under a service's
`environment:`). `make up` also reads `KAFKA_PORT` (9092) and `REDIS_PORT` (6379) for the
servers it starts, and `docker compose` reads the same port variables for the ports it
publishes. OpenTelemetry's own `OTEL_*` variables configure the trace exporter
([operating.md](operating.md#traces-metrics-alerts-dead-letters)).
"""


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value == "":
        return "(empty)"
    return f"`{value}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _readers(name: str) -> str:
    readers = [service for service, settings in SERVICES.items() if name in settings.model_fields]
    if len(readers) == len(SERVICES):
        return "all three"
    return ", ".join(readers) or "`make up`, compose"


def _table(fields: Iterable[tuple[str, FieldInfo]], with_readers: bool) -> list[str]:
    if with_readers:
        lines = ["| Variable | Default | Read by | Description |", "| --- | --- | --- | --- |"]
    else:
        lines = ["| Variable | Default | Description |", "| --- | --- | --- |"]
    for name, field in fields:
        readers = f" {_readers(name)} |" if with_readers else ""
        lines.append(f"| `{name.upper()}` | {_default(field)} |{readers} {_cell(field.description or '')} |")
    return lines


def render() -> str:
    """The page's text."""
    out = [_INTRO]
    shared: set[str] = set()
    for title, settings in GROUPS:
        shared |= set(settings.model_fields)
        doc = " ".join((settings.__dict__.get("__doc__") or "").split())
        out.append(f"## {title}\n")
        if doc:
            out.append(f"{doc}\n")
        out.extend([*_table(settings.model_fields.items(), with_readers=True), ""])
    for service, settings in SERVICES.items():
        own = [(name, field) for name, field in settings.model_fields.items() if name not in shared]
        out.append(f"## The {service}'s own\n")
        out.extend([*_table(own, with_readers=False), ""])
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is not what this writes")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != text:
            sys.exit(f"{PAGE} is out of date: run `make config-doc`")
        return
    PAGE.write_text(text)
    print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
