"""The live streams' Server-Sent Events frames: how a transition, a snapshot and a reset are written.

A transition's frame is its `event:` and `data:` lines (its body) after an `id:` line. The
body is encoded once, whoever it goes to; only the `id` differs between the streams: an
order's stream names the entry's position in its shard's update stream, a feed its position
in every shard's at once (stream.join_positions), so with one shard the two are the same.
"""

import orjson

from orders_readmodel.stream import Snapshot

__all__ = ["HEARTBEAT", "RETRY", "body", "frame", "reset_frame", "snapshot_frame", "with_id"]

HEARTBEAT = b": keep-alive\n\n"
RETRY = b"retry: 2000\n\n"


def body(name: str, data: object) -> bytes:
    """An event's lines but its `id`: `event: <name>` and `data: <data as JSON>`."""
    return b"event: %s\ndata: %s\n\n" % (name.encode(), orjson.dumps(data))


def with_id(position: str, event_body: bytes) -> bytes:
    """`event_body` (`body`) after the `id:` line of `position`."""
    return b"id: %s\n%s" % (position.encode(), event_body)


def frame(position: str, name: str, data: object) -> bytes:
    return with_id(position, body(name, data))


def snapshot_frame(snapshot: Snapshot) -> bytes:
    """The order as it is now, as the event of its latest transition (an id-only frame if unknown)."""
    if snapshot.order is None or snapshot.position is None:
        return b"id: %s\n\n" % snapshot.head.encode()
    return frame(snapshot.position, snapshot.order.status, snapshot.order.model_dump(mode="json"))


def reset_frame(stale: str, position: str | None) -> bytes:
    """Tells the client that the stream cannot give what follows `stale` (trimmed, or ahead)."""
    data = {
        "message": "The update stream does not hold this position (trimmed, or never handed out): "
        "re-read the order(s); "
        "the events that follow continue from the current state.",
        "lastEventId": stale,
    }
    reset = b"event: reset\ndata: %s\n\n" % orjson.dumps(data)
    return reset if position is None else b"id: %s\n" % position.encode() + reset
