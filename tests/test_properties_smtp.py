"""Property-based tests of the SMTP command-line and DATA readers (Hypothesis).

The reader is ``mssante_base.smtp.aiosmtpd_adapter.StrictLineReader``, the StreamReader every SMTP session
reads from. Whatever the payload and however the network cuts it into chunks, DATA ends at the first
CRLF "." CRLF and nowhere else (a bare LF never ends a message: SMTP smuggling), returns the payload as
sent (dot-stuffed, final CRLF kept), and refuses it exactly when it is larger than the limit.
"""

from __future__ import annotations

import asyncio

from hypothesis import example, given, settings
from hypothesis import strategies as st

from mssante_base.smtp.aiosmtpd_adapter import BareLineEnding, LineTooLong, StrictLineReader


def stuffed(payload: bytes) -> bytes:
    """The payload as a client sends it: CRLF-terminated, each line starting with "." doubled."""
    if payload and not payload.endswith(b"\r\n"):
        payload += b"\r\n"
    return b"\r\n".join(b"." + line if line.startswith(b".") else line for line in payload.split(b"\r\n"))


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    """``data`` in chunks of the given sizes (the last chunk takes the rest)."""
    chunks, pos = [], 0
    for size in sizes:
        if pos >= len(data):
            break
        chunks.append(data[pos : pos + size])
        pos += size
    if pos < len(data):
        chunks.append(data[pos:])
    return chunks


async def feed(reader: asyncio.StreamReader, chunks: list[bytes]) -> None:
    """The network: one chunk per turn of the event loop, then EOF."""
    for chunk in chunks:
        reader.feed_data(chunk)
        await asyncio.sleep(0)
    reader.feed_eof()


def read_data(wire: bytes, sizes: list[int], max_size: int) -> tuple[bytes | None, bytes]:
    """What ``read_data`` returns for ``wire`` arriving in chunks, and what is left in the stream."""

    async def scenario() -> tuple[bytes | None, bytes]:
        reader = StrictLineReader(limit=1000)
        feeder = asyncio.ensure_future(feed(reader, cut(wire, sizes)))
        result = await reader.read_data(max_size, lambda: None)
        await feeder
        return result, await reader.read()

    return asyncio.run(scenario())


payloads = st.binary(max_size=300) | st.lists(
    st.sampled_from([b".", b"..", b"\r\n", b"\n", b"\r", b"\n.\n", b"\r\n.\r\n", b".\r\n", b"x", b"\r\n.", b"\n.\r\n"]),
    max_size=20,
).map(b"".join)
chunk_sizes = st.lists(st.integers(1, 40), max_size=30)


@settings(max_examples=300, deadline=None)
@given(payloads, chunk_sizes, st.binary(max_size=20))
@example(b"a\n.\nb", [], b"")
@example(b"a\r\n.\r\nb", [1, 1, 1, 1, 1, 1], b"MAIL FROM:<x@y>\r\n")
def test_data_returns_exactly_the_stuffed_payload_whatever_the_chunks(
    payload: bytes, sizes: list[int], after: bytes,
) -> None:
    """The payload comes back as sent and the next command stays in the stream (pipelining)."""
    sent = stuffed(payload)
    result, rest = read_data(sent + b".\r\n" + after, sizes, max_size=10_000)
    assert result == sent
    assert rest == after


@settings(max_examples=300, deadline=None)
@given(payloads, chunk_sizes, st.integers(0, 320))
@example(b"123456\r\n", [10], 8)  # the whole payload and ".\r" in the buffer, its "\n" later
@example(b"1234567\r\n", [11], 9)
def test_data_is_refused_exactly_when_larger_than_the_limit(payload: bytes, sizes: list[int], max_size: int) -> None:
    """Too big means more than ``max_size`` octets of dot-stuffed payload, however the bytes arrive."""
    sent = stuffed(payload)
    result, rest = read_data(sent + b".\r\nQUIT\r\n", sizes, max_size)
    assert result == (None if len(sent) > max_size else sent)
    assert rest == b"QUIT\r\n"


def read_lines(wire: bytes, sizes: list[int], limit: int) -> list[bytes | type[Exception]]:
    """Each command line ``readuntil`` returns, or the error it raises, until EOF."""

    async def scenario() -> list[bytes | type[Exception]]:
        reader = StrictLineReader(limit=limit)
        feeder = asyncio.ensure_future(feed(reader, cut(wire, sizes)))
        found: list[bytes | type[Exception]] = []
        while True:
            try:
                found.append(await reader.readuntil(b"\n"))
            except (BareLineEnding, LineTooLong) as error:
                found.append(type(error))
            except asyncio.IncompleteReadError:
                break
        await feeder
        return found

    return asyncio.run(scenario())


def expected_lines(wire: bytes, limit: int) -> list[bytes | type[Exception]]:
    """The oracle: lines up to each LF; CRLF-ended ones are returned, others refused, long ones dropped."""
    found: list[bytes | type[Exception]] = []
    for line in wire.split(b"\n")[:-1]:
        line += b"\n"
        if len(line) - 1 > limit:  # StreamReader: the LF may sit just past the limit
            found.append(LineTooLong)
        elif not line.endswith(b"\r\n") or b"\r" in line[:-2]:
            found.append(BareLineEnding)
        else:
            found.append(line)
    return found


lines = st.lists(
    st.tuples(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), st.sampled_from([b"\r\n", b"\n"])),
    max_size=12,
).map(lambda pairs: b"".join(text + end for text, end in pairs))


@settings(max_examples=300, deadline=None)
@given(lines, chunk_sizes, st.integers(8, 40))
def test_command_lines_end_only_with_crlf_whatever_the_chunks(wire: bytes, sizes: list[int], limit: int) -> None:
    """A line ending in a bare LF (or holding a bare CR) is refused; an over-long one is dropped whole,
    and the next line is read from its own start."""
    assert read_lines(wire, sizes, limit) == expected_lines(wire, limit)
