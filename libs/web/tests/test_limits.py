"""Connection limits (orders_web.limits) on a real uvicorn server and real sockets: slow and idle
connections and slow bodies are closed, huge heads get 431, connections over the cap get 503,
garbage gets 400, all in the envelope; normal, keep-alive, pipelined and streamed requests are
left alone."""

import asyncio
import contextlib
import time

import orjson
import pytest

from orders_contract.settings import HttpSettings
from orders_web.limits import HttpLimits
from orders_web.serving import http_limits, http_options

from .limits_harness import (
    LIMITS,
    SLACK,
    closed,
    connect,
    get,
    read_answer,
    request,
    served,
    trickle,
)


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
