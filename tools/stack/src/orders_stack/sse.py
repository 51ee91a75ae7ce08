"""A small Server-Sent Events reader over httpx, for the tests and scripts that follow the live streams."""

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["SseEvent", "read_events"]


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched block: `event` is "" for an id-only block, "comment" for a comment line."""

    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data)


async def read_events(response: httpx.Response, comments: bool = False) -> AsyncIterator[SseEvent]:
    """The events of a streamed response, as the SSE format splits them (blank line ends one)."""
    event, last_id = "", None
    data: list[str] = []
    got_id = False
    async for line in response.aiter_lines():
        if not line:
            if data or got_id:
                yield SseEvent(event or ("message" if data else ""), "\n".join(data), last_id)
            event, data, got_id = "", [], False
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if not name:
            if comments:
                yield SseEvent("comment", value, last_id)
        elif name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            last_id, got_id = value, True
