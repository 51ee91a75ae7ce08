"""Connection limits (orders_web.limits) on a real uvicorn server and real sockets: slow and idle
connections and slow bodies are closed, huge heads get 431, connections over the cap get 503,
garbage gets 400, all in the envelope; normal, keep-alive, pipelined and streamed requests are
left alone."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import orjson
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from orders_contract.settings import HttpSettings
from orders_stack import free_port
from orders_web.limits import HttpLimits, limited_protocol
from orders_web.serving import http_limits, http_options

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


async def test_normal_keep_alive_and_pipelined_requests_are_answered() -> None:
    async with asyncio.timeout(20), served() as port:
        reader, writer = await connect(port)
        try:
            for path in ("/a", "/b"):  # keep-alive: one connection, one request after the other
                writer.write(get(path))
                answer = await read_answer(reader)
                assert answer.status == 200
                assert orjson.loads(answer.body)["path"] == path
            writer.write(get("/c") + get("/d") + get("/e"))  # pipelined, in one write
            paths = [orjson.loads((await read_answer(reader)).body)["path"] for _ in range(3)]
            assert paths == ["/c", "/d", "/e"]
            body = b"x" * 40_000  # a body larger than the head cap, in the read that holds the head
            writer.write(
                b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            assert orjson.loads((await read_answer(reader)).body)["size"] == len(body)
        finally:
            writer.close()


async def test_a_head_under_the_cap_sent_in_pieces_is_answered() -> None:
    async with asyncio.timeout(20), served() as port:
        reader, writer = await connect(port)
        try:
            data = get("/pieces", b"X-Big: " + b"v" * 12_000 + b"\r\n")
            for i in range(0, len(data), 1000):
                writer.write(data[i : i + 1000])
                await writer.drain()
                await asyncio.sleep(0.01)
            answer = await read_answer(reader)
            assert answer.status == 200
        finally:
            writer.close()


async def test_a_stream_outlives_the_header_and_idle_timeouts() -> None:
    async with asyncio.timeout(20), served() as port:
        started = time.monotonic()
        answer = await request(port, get("/stream"))
        assert answer.status == 200
        assert answer.body == b"".join(b"data: %d\n\n" % i for i in range(12))
        assert time.monotonic() - started > LIMITS.header_timeout + LIMITS.idle_timeout  # it ran that long


async def test_a_slowloris_head_is_cut_at_the_deadline() -> None:
    async with asyncio.timeout(20), served() as port:
        reader, writer = await connect(port)
        started = time.monotonic()

        sender = asyncio.create_task(trickle(writer, get("/slow", b"X-A: " + b"a" * 100 + b"\r\n"), 0.2))
        try:
            rest = await closed(reader)
            elapsed = time.monotonic() - started
            assert not sender.done(), "the head was not complete when the connection closed"
            assert elapsed < LIMITS.header_timeout + SLACK
            if rest:  # the 408 (a reset may have destroyed it)
                assert rest.startswith(b"HTTP/1.1 408 ")
                assert b'"success":false' in rest
        finally:
            sender.cancel()
            writer.close()


async def test_a_slow_second_head_on_a_keep_alive_connection_is_cut() -> None:
    """After a response, the next head has the header timeout from the end of that response."""
    async with asyncio.timeout(20), served() as port:
        reader, writer = await connect(port)
        try:
            writer.write(get("/first"))
            assert (await read_answer(reader)).status == 200
            started = time.monotonic()

            head = get("/second", b"X-A: " + b"a" * 100 + b"\r\n")
            sender = asyncio.create_task(trickle(writer, head, 0.2))
            try:
                rest = await closed(reader)
                assert not sender.done()
                assert time.monotonic() - started < LIMITS.header_timeout + SLACK
                assert not rest or rest.startswith(b"HTTP/1.1 408 ")
            finally:
                sender.cancel()
        finally:
            writer.close()


async def test_a_connection_that_sends_nothing_is_closed() -> None:
    async with asyncio.timeout(20), served() as port:
        reader, writer = await connect(port)
        started = time.monotonic()
        try:
            assert await closed(reader) == b""  # closed without an answer
            assert time.monotonic() - started < LIMITS.idle_timeout + SLACK
        finally:
            writer.close()


async def test_an_idle_keep_alive_connection_is_closed_after_its_response() -> None:
    async with asyncio.timeout(20), served() as port:
        reader, writer = await connect(port)
        try:
            writer.write(get())
            assert (await read_answer(reader)).status == 200
            started = time.monotonic()
            assert await closed(reader) == b""
            assert time.monotonic() - started < LIMITS.idle_timeout + SLACK
        finally:
            writer.close()


async def test_a_silent_connection_gets_no_408_when_idle_outlasts_the_head_deadline() -> None:
    limits = HttpLimits(
        header_timeout=0.5, idle_timeout=30, max_header_bytes=16 * 1024, max_connections=50, body_timeout=30
    )
    async with asyncio.timeout(20), served(limits) as port:
        reader, writer = await connect(port)
        try:
            assert await closed(reader) == b""
        finally:
            writer.close()


@pytest.mark.parametrize(
    "data",
    [
        get("/", b"X-Huge: " + b"h" * 100_000 + b"\r\n"),
        get("/?q=" + "u" * 100_000),
        get("/", b"".join(b"X-%d: %s\r\n" % (i, b"v" * 90) for i in range(1000))),
    ],
    ids=["one-header", "long-url", "many-headers"],
)
async def test_a_huge_head_gets_431_in_the_envelope_and_others_are_still_answered(data: bytes) -> None:
    async with asyncio.timeout(20), served() as port:
        reader, writer = await connect(port)
        try:
            with contextlib.suppress(ConnectionError):
                writer.write(data)
                await writer.drain()
            answer = await read_answer(reader)
            assert answer.status == 431
            assert answer.headers["connection"] == "close"
            assert "too large" in str(answer.envelope()["message"])
            assert await closed(reader) == b""
        finally:
            writer.close()
        assert (await request(port, get("/after"))).status == 200


async def test_a_head_growing_past_the_cap_gets_431_before_it_ends() -> None:
    """Read by read, never complete: refused once what arrived is over the cap (not at the deadline)."""
    async with asyncio.timeout(20), served() as port:
        reader, writer = await connect(port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: test\r\nX-Endless: ")
            with contextlib.suppress(ConnectionError):
                for _ in range(40):  # 40 KB in 1 KB reads, far less than the header timeout
                    writer.write(b"e" * 1000)
                    await writer.drain()
                    await asyncio.sleep(0.005)
            answer = await read_answer(reader)
            assert answer.status == 431
            answer.envelope()
        finally:
            writer.close()


async def test_a_huge_head_in_one_read_gets_431() -> None:
    """A head over the cap that the server may get in a single read: measured at its end."""
    async with asyncio.timeout(20), served() as port:
        answer = await request(port, get("/", b"X-Big: " + b"b" * 20_000 + b"\r\n"))
        assert answer.status == 431
        answer.envelope()


async def test_connections_over_the_cap_get_503_with_retry_after() -> None:
    limits = HttpLimits(
        header_timeout=5, idle_timeout=5, max_header_bytes=16 * 1024, max_connections=3, body_timeout=5
    )
    async with asyncio.timeout(20), served(limits) as port:
        held = [await connect(port) for _ in range(3)]
        try:
            for reader, writer in held:  # each is open on the server and works
                writer.write(get())
                assert (await read_answer(reader)).status == 200
            extra_reader, extra_writer = await connect(port)
            try:
                extra_writer.write(get("/extra"))
                answer = await read_answer(extra_reader)
                assert answer.status == 503
                assert answer.headers["retry-after"] == "1"
                assert "Too many connections" in str(answer.envelope()["message"])
                assert await closed(extra_reader) == b""
            finally:
                extra_writer.close()
            held.pop()[1].close()  # one of the three goes: a new one is served
            await asyncio.sleep(0.3)
            assert (await request(port, get("/again"))).status == 200
        finally:
            for _, writer in held:
                writer.close()


@pytest.mark.parametrize("data", [b"NOT HTTP AT ALL\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"])
async def test_what_the_parser_rejects_gets_400_in_the_envelope(data: bytes) -> None:
    async with asyncio.timeout(20), served() as port:
        answer = await request(port, data)
        assert answer.status == 400
        assert answer.envelope()["message"] == "Invalid HTTP request"
        assert (await request(port, get("/after"))).status == 200


def post_head(path: str, length: int) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % (path.encode(), length)


async def trickle(writer: asyncio.StreamWriter, data: bytes, pause: float) -> None:
    """`data` one byte at a time, `pause` apart, until done or the server closes."""
    with contextlib.suppress(ConnectionError):
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(pause)


async def test_a_trickled_body_is_cut_at_the_deadline_with_408() -> None:
    """The head is complete at once; its body then comes one byte every 0.25 s (the idle timeout
    never passes): cut at the body deadline, answered 408 in the envelope, closed."""
    async with asyncio.timeout(20), served() as port:
        reader, writer = await connect(port)
        try:
            writer.write(post_head("/echo", 40))
            await writer.drain()
            started = time.monotonic()
            sender = asyncio.create_task(trickle(writer, b"b" * 40, 0.25))  # 10 s in all
            try:
                answer = await read_answer(reader)
                assert not sender.done(), "the body was complete when the answer came"
                assert time.monotonic() - started < LIMITS.body_timeout + SLACK
                assert answer.status == 408
                assert answer.headers["connection"] == "close"
                assert answer.envelope()["message"] == "Request body not received in time"
                assert await closed(reader) == b""  # nothing after it (the app's answer is dropped)
            finally:
                sender.cancel()
        finally:
            writer.close()
        assert (await request(port, get("/after"))).status == 200


async def test_a_trickled_body_after_the_response_started_is_just_closed() -> None:
    async with asyncio.timeout(20), served() as port:
        reader, writer = await connect(port)
        try:
            writer.write(post_head("/early", 40))
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            started = time.monotonic()
            sender = asyncio.create_task(trickle(writer, b"b" * 40, 0.25))
            try:
                rest = await closed(reader)
                assert not sender.done()
                assert time.monotonic() - started < LIMITS.body_timeout + SLACK
                assert b"started" in rest or rest == b""  # the first chunk (unless a reset lost it)
                assert b"408" not in rest
                assert not rest.endswith(b"0\r\n\r\n")  # the response was cut, not completed
            finally:
                sender.cancel()
        finally:
            writer.close()


async def test_a_body_sent_in_time_in_pieces_is_answered() -> None:
    """Ten pieces 0.25 s apart: longer than the header and idle timeouts, within the body's."""
    limits = HttpLimits(
        header_timeout=1.0, idle_timeout=1.0, max_header_bytes=16 * 1024, max_connections=50, body_timeout=10
    )
    async with asyncio.timeout(20), served(limits) as port:
        reader, writer = await connect(port)
        try:
            writer.write(post_head("/echo", 10 * 1000))
            for _ in range(10):
                await asyncio.sleep(0.25)
                writer.write(b"p" * 1000)
                await writer.drain()
            answer = await read_answer(reader)
            assert answer.status == 200
            assert orjson.loads(answer.body)["size"] == 10 * 1000
            writer.write(post_head("/echo", 3) + b"abc")  # the connection is still usable
            assert orjson.loads((await read_answer(reader)).body)["size"] == 3
        finally:
            writer.close()


async def test_a_long_stream_after_a_complete_body_is_not_cut() -> None:
    """The body arrives in pieces (its deadline is armed), then the response streams for longer
    than the body timeout: it is not cut."""
    async with asyncio.timeout(20), served() as port:
        reader, writer = await connect(port)
        try:
            writer.write(post_head("/stream", 20))
            await writer.drain()
            for piece in (b"a" * 10, b"b" * 10):
                await asyncio.sleep(0.1)
                writer.write(piece)
                await writer.drain()
            started = time.monotonic()
            answer = await read_answer(reader)
            assert answer.status == 200
            assert answer.body == b"".join(b"data: %d\n\n" % i for i in range(12))
            assert time.monotonic() - started > LIMITS.body_timeout  # it ran past the deadline
        finally:
            writer.close()


async def test_a_pipelined_body_waiting_behind_a_stream_is_not_cut() -> None:
    """A request pipelined behind a stream, its body not all sent: its deadline passes during the
    stream (an answer then would go into the stream); its body has the time from when the
    stream ends. Neither is cut."""
    limits = HttpLimits(
        header_timeout=1.0, idle_timeout=1.0, max_header_bytes=16 * 1024, max_connections=50, body_timeout=2.0
    )
    async with asyncio.timeout(20), served(limits) as port:
        reader, writer = await connect(port)
        try:
            writer.write(get("/stream") + post_head("/echo", 20) + b"a" * 10)
            started = time.monotonic()
            stream = await read_answer(reader)  # 2.4 s at least
            assert time.monotonic() - started > limits.body_timeout  # the deadline passed meanwhile
            assert stream.status == 200
            assert stream.body == b"".join(b"data: %d\n\n" % i for i in range(12))
            writer.write(b"b" * 10)
            echo = await read_answer(reader)
            assert echo.status == 200
            assert orjson.loads(echo.body)["size"] == 20
        finally:
            writer.close()


def test_the_settings_make_the_limits_and_the_uvicorn_options() -> None:
    settings = HttpSettings(
        http_header_timeout_s=3,
        http_idle_timeout_s=2.5,
        http_max_header_bytes=2048,
        http_max_connections=7,
        http_body_timeout_s=4,
    )
    assert http_limits(settings) == HttpLimits(3, 2.5, 2048, 7, 4)
    options = http_options(settings)
    assert options["timeout_keep_alive"] == 2
    assert options["http"].keywords == {"limits": HttpLimits(3, 2.5, 2048, 7, 4)}
    defaults = http_limits(HttpSettings())
    assert defaults.max_header_bytes >= 16 * 1024
    assert defaults.max_connections > 2000
    assert defaults.body_timeout >= defaults.header_timeout  # a 1 MiB batch needs longer than a head
