"""A small Server-Sent Events reader, for the tests, scripts and load tools that follow the live streams.

`parse_events` splits lines into events as the SSE format does, whatever
client read them; `read_events` feeds it an httpx streamed response.
"""

import json
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

__all__ = ["SseEvent", "parse_events", "read_events"]


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched block: `event` is "" for an id-only block, "comment" for a comment line."""

    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data)


async def parse_events(lines: AsyncIterable[str], comments: bool = False) -> AsyncIterator[SseEvent]:
    """The events of a stream of lines (their line ends may be left on), as the SSE format
    splits them: a blank line ends one. Comment lines are events too when `comments`."""
    event, last_id = "", None
    data: list[str] = []
    got_id = False
    async for raw in lines:
        line = raw.rstrip("\r\n")
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


def read_events(response: "httpx.Response", comments: bool = False) -> AsyncIterator[SseEvent]:
    """The events of an httpx streamed response (see `parse_events`)."""
    return parse_events(response.aiter_lines(), comments)
