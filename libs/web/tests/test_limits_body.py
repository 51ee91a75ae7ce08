"""Connection limits on request bodies (orders_web.limits): a trickled body is cut at its deadline,
one sent in time is answered, and a long response after a complete body is never cut."""

import asyncio
import time

import orjson

from orders_web.limits import HttpLimits

from .limits_harness import (
    LIMITS,
    SLACK,
    closed,
    connect,
    get,
    post_head,
    read_answer,
    request,
    served,
    trickle,
)


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
