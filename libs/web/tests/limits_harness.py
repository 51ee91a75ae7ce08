"""What the connection-limit tests share: a real uvicorn server with the limited protocol on a
free loopback port, a small ASGI app, and raw-socket helpers that read answers byte by byte."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import orjson
import uvicorn
from starlette.types import Receive, Scope, Send

from orders_stack import free_port
from orders_web.limits import HttpLimits, limited_protocol

LIMITS = HttpLimits(
    header_timeout=1.0, idle_timeout=1.0, max_header_bytes=16 * 1024, max_connections=50, body_timeout=1.0
)
SLACK = 2.0
"""Allowed beyond a deadline before a test calls the connection not closed (a busy machine)."""


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """`/stream`: 12 chunks 0.2 s apart (longer than the timeouts); `/early`: a response started
    before the body is read, then the body's size; `/echo`: the request body's size; anything
    else: a small JSON answer naming the path."""
    assert scope["type"] == "http"
    if scope["path"] == "/early":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"started\n", "more_body": True})
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["path"] == "/early":
        await send({"type": "http.response.body", "body": b"%d\n" % len(body), "more_body": False})
        return
    if scope["path"] == "/stream":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for i in range(12):
            await send({"type": "http.response.body", "body": b"data: %d\n\n" % i, "more_body": True})
            await asyncio.sleep(0.2)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    answer = orjson.dumps({"path": scope["path"], "size": len(body)})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the test runner owns the signals


@contextlib.asynccontextmanager
async def served(limits: HttpLimits = LIMITS) -> AsyncIterator[int]:
    """`app` on a free loopback port with `limits`, in this event loop; stopped at the end, whatever
    happened."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http=limited_protocol(limits),
        lifespan="off",
        log_level="warning",
        timeout_graceful_shutdown=2,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                assert not task.done(), "the server did not start"
                await asyncio.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, 10)
        except TimeoutError:
            task.cancel()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def envelope(self) -> dict[str, object]:
        assert self.headers["content-type"] == "application/json"
        parsed = orjson.loads(self.body)
        assert set(parsed) >= {"success", "message", "data", "timestamp"}
        assert parsed["success"] is False
        assert parsed["data"] is None
        assert isinstance(parsed["timestamp"], str)
        assert parsed["timestamp"].endswith("Z")
        return dict(parsed)


async def read_answer(reader: asyncio.StreamReader, head: bytes | None = None) -> Answer:
    """One HTTP/1.1 response (content-length or chunked); `head`: its head, if already read."""
    if head is None:
        head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        assert headers.get("transfer-encoding") == "chunked"
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    return Answer(status, headers, body)


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)


async def closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server still sends until it closes (a reset counts as closed)."""
    try:
        return await reader.read()
    except ConnectionResetError:
        return b""


def get(path: str = "/", extra: bytes = b"") -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: test\r\n%s\r\n" % (path.encode(), extra)


async def request(port: int, data: bytes) -> Answer:
    reader, writer = await connect(port)
    try:
        writer.write(data)
        return await read_answer(reader)
    finally:
        writer.close()


def post_head(path: str, length: int) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % (path.encode(), length)


async def trickle(writer: asyncio.StreamWriter, data: bytes, pause: float) -> None:
    """`data` one byte at a time, `pause` apart, until done or the server closes."""
    with contextlib.suppress(ConnectionError):
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(pause)
