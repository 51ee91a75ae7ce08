"""The event contract (orders_api.asyncapi) is a valid AsyncAPI 3.0 document.

Checked against the specification's own JSON Schema from the `@asyncapi/specs` npm package,
which `make asyncapi-specs` (a step of `make test`) fetches into .cache at build time.
"""

import copy
import json
import os
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs pinned; used in this one test
import pytest

from orders_api.asyncapi import asyncapi_document
from orders_contract.events import EVENT_MODELS
from orders_contract.settings import KafkaSettings

pytestmark = pytest.mark.static

ROOT = Path(__file__).resolve().parents[2]
SPECS = Path(os.environ.get("ASYNCAPI_SPECS", ROOT / ".cache" / "asyncapi-specs"))
SCHEMA = SPECS / "node_modules" / "@asyncapi" / "specs" / "schemas" / "3.0.0-without-$id.json"


@pytest.fixture(scope="module")
def validator() -> Any:
    if not SCHEMA.is_file():
        pytest.fail(f"{SCHEMA} is missing: run `make asyncapi-specs`")
    schema = json.loads(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_the_document_is_valid_asyncapi_3(validator: Any) -> None:
    document = asyncapi_document()
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
    assert errors == []


def test_the_check_can_fail(validator: Any) -> None:
    broken = copy.deepcopy(asyncapi_document())
    broken["operations"]["placeOrders"]["action"] = "publish"  # AsyncAPI 2's word, not 3's
    assert not validator.is_valid(broken)


def test_every_topic_and_every_event_model_is_in_it() -> None:
    settings = KafkaSettings(
        kafka_orders_topic="o", kafka_status_topic="s", kafka_dlq_topic="d", kafka_quarantine_topic="q"
    )
    document = asyncapi_document(settings)
    assert {channel["address"] for channel in document["channels"].values()} == {"o", "s", "d", "q"}
    payloads = {m["payload"].get("$ref") for m in document["components"]["messages"].values()}
    for model in EVENT_MODELS:
        assert f"#/components/schemas/{model.__name__}" in payloads
        assert model.__name__ in document["components"]["schemas"]
