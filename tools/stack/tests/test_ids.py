"""Identifiers the stack makes up: cluster ids and ports."""

import uuid

import pytest

from orders_stack import stack


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # Kafka's storage tool reads such an id as an option ("--cluster-id/-t: expected one
    # argument"): one draw in 64 failed CI's fault suite. 0xF8 puts 0b111110 (62, "-" in
    # URL-safe base64) in the first six bits.
    drawn = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x10" + bytes(15))])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(drawn))
    assert stack.cluster_id() == "EAAAAAAAAAAAAAAAAAAAAA"


def test_free_ports_are_never_handed_out_twice() -> None:
    ports = [stack.free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
