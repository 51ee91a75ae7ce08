"""Every event version we have published still decodes (fixtures/events), and each version the
code publishes now has its fixture: a model change that breaks an old event fails here.

Adding a version: keep the old model (and its fixture), add the new one with its own
`dataschema`, and a fixture `<type>.v<n>.json` of an event as it is published.
"""

import json
from pathlib import Path
from typing import get_args

import pytest
from pydantic import BaseModel

from orders_contract.events import (
    CANCELLED_V1,
    EVENT_MODELS,
    PLACED_V1,
    OrderCancelledEvent,
    OrderPlacedEvent,
    OrderStatusChangedEvent,
    decode_event,
    decode_status_event,
)

FIXTURES = Path(__file__).parent / "fixtures" / "events"
ALL = sorted(FIXTURES.glob("*.json"))


def decode(raw: bytes) -> BaseModel:
    kind = json.loads(raw)["type"]
    return decode_status_event(raw) if kind == "order.status.changed" else decode_event(raw)


@pytest.mark.parametrize("path", ALL, ids=[p.name for p in ALL])
def test_a_published_event_still_decodes(path: Path) -> None:
    raw = path.read_bytes()
    event = decode(raw)
    assert event.type == json.loads(raw)["type"]  # type: ignore[attr-defined]
    # What it says survives a round trip through the current model.
    again = json.loads(event.model_dump_json())
    original = json.loads(raw)
    assert {k: again[k] for k in original} == original


def test_every_version_we_publish_has_a_fixture() -> None:
    for model in EVENT_MODELS:
        (event_type,) = get_args(model.model_fields["type"].annotation)
        schemas = [
            arg for arg in get_args(model.model_fields["dataschema"].annotation) if arg is not type(None)
        ]
        for literal in schemas:
            for version in get_args(literal):
                suffix = version.rsplit(":", 1)[1]
                assert (FIXTURES / f"{event_type}.{suffix}.json").is_file(), f"no fixture of {version}"


def test_events_before_versions_existed_read_as_version_1() -> None:
    for name, model, version in (
        ("order.placed", OrderPlacedEvent, PLACED_V1),
        ("order.cancelled", OrderCancelledEvent, CANCELLED_V1),
    ):
        event = decode((FIXTURES / f"{name}.unversioned.json").read_bytes())
        assert isinstance(event, model)
        assert event.dataschema == version


def test_an_unknown_version_is_refused() -> None:
    raw = json.loads((FIXTURES / "order.status.changed.v1.json").read_bytes())
    raw["dataschema"] = raw["dataschema"].replace(":v1", ":v9")
    with pytest.raises(ValueError, match="dataschema"):
        decode_status_event(json.dumps(raw).encode())
    assert isinstance(
        decode((FIXTURES / "order.status.changed.v1.json").read_bytes()), OrderStatusChangedEvent
    )
