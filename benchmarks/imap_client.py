"""A small asyncio IMAP client for the benchmarks: raw streams over TLS, precise timing, little CPU.

It frames responses (lines and ``{n}`` literals), sends APPEND data as a LITERAL+ literal in the same
write as the command, and returns the tagged status with the untagged responses when asked. It
parses nothing else: the benchmark picks what it needs (UIDs, EXISTS, APPENDUID) with regexes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import ssl
import time
from dataclasses import dataclass, field

_LITERAL_AT_END = re.compile(rb"\{(\d+)\}\r\n\Z")
STREAM_LIMIT = 1 << 20


class ImapError(Exception):
    """The server answered something the benchmark did not expect (or closed the connection)."""


@dataclass
class Response:
    """A tagged completion, the untagged responses before it (when kept) and the bytes received."""

    status: str
    text: bytes
    untagged: list[bytes] = field(default_factory=list)
    received: int = 0
    literals: list[bytes] = field(default_factory=list)  # the literals' data, when asked for

    @property
    def ok(self) -> bool:
        return self.status == "OK"


class ImapClient:
    """One IMAP connection. Not safe for concurrent commands (the benchmark runs one at a time)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self._tags = itertools.count(1)
        self.greeting = b""

    @classmethod
    async def connect(cls, host: str, port: int, context: ssl.SSLContext, *, starttls: bool = False,
                      timeout: float = 60.0) -> ImapClient:
        """Connect, with implicit TLS or STARTTLS, and read the greeting."""
        if not starttls:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=context, limit=STREAM_LIMIT), timeout)
            client = cls(reader, writer)
            client.greeting = await asyncio.wait_for(reader.readuntil(b"\n"), timeout)
            if not client.greeting.startswith(b"* OK"):
                writer.close()
                raise ImapError(f"greeting: {client.greeting!r}")
            return client
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=STREAM_LIMIT), timeout)
        client = cls(reader, writer)
        client.greeting = await asyncio.wait_for(reader.readuntil(b"\n"), timeout)
        if not client.greeting.startswith(b"* OK"):
            writer.close()
            raise ImapError(f"greeting: {client.greeting!r}")
        response = await client.command("STARTTLS")
        if not response.ok:
            raise ImapError(f"STARTTLS refused: {response.text!r}")
        await asyncio.wait_for(writer.start_tls(context), timeout)
        return client

    async def read_item(self, keep: bool = False, literals: list[bytes] | None = None) -> tuple[bytes, int]:
        """One response (a line, with the literals it announces): (its line text, bytes received).

        With ``keep`` the literals' data are left out of the returned text (replaced by ``{n}``), which
        is all the benchmark looks at; without it only the first line is returned. The literals' data
        are appended to ``literals`` when given (to check what a FETCH returned).
        """
        line = await self.reader.readuntil(b"\n")
        received = len(line)
        pieces = [line] if keep else []
        first = line
        while (match := _LITERAL_AT_END.search(line)) is not None:
            size = int(match.group(1))
            data = await self.reader.readexactly(size)
            if literals is not None:
                literals.append(data)
            line = await self.reader.readuntil(b"\n")
            received += size + len(line)
            if keep:
                pieces.append(line)
        return (b"".join(pieces) if keep else first), received

    async def command(self, text: str | bytes, *, literal: bytes | None = None, keep: bool = False,
                      data: bool = False) -> Response:
        """Send one command (with a LITERAL+ literal at its end when given); read until its tagged reply.

        With ``data`` the response keeps the data of the literals it received."""
        tag = b"b%d" % next(self._tags)
        payload = text.encode() if isinstance(text, str) else text
        if literal is None:
            self.writer.write(tag + b" " + payload + b"\r\n")
        else:
            self.writer.write(tag + b" " + payload + b" {%d+}\r\n" % len(literal) + literal + b"\r\n")
        return await self.read_until_tagged(tag, keep=keep, data=data)

    async def read_until_tagged(self, tag: bytes, *, keep: bool = False, data: bool = False) -> Response:
        prefix = tag + b" "
        untagged: list[bytes] = []
        literals: list[bytes] | None = [] if data else None
        total = 0
        while True:
            try:
                item, received = await self.read_item(keep, literals)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                raise ImapError(f"connection lost waiting for {tag.decode()}") from exc
            total += received
            if item.startswith(prefix):
                status, _, rest = item[len(prefix):].partition(b" ")
                return Response(status.decode(), rest.rstrip(b"\r\n"), untagged, total, literals or [])
            if keep:
                untagged.append(item)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def idle(self) -> bytes:
        """Start IDLE: returns the tag once the server's continuation arrived."""
        tag = b"b%d" % next(self._tags)
        self.writer.write(tag + b" IDLE\r\n")
        while True:
            line = await self.reader.readuntil(b"\n")
            if line.startswith(b"+"):
                return tag
            if line.startswith(tag + b" "):
                raise ImapError(f"IDLE refused: {line!r}")

    async def wait_for(self, suffix: bytes, timeout: float) -> float | None:
        """perf_counter() when a line ending with ``suffix`` arrives; None after ``timeout``."""
        async def look() -> float:
            while True:
                line = await self.reader.readuntil(b"\n")
                if line.endswith(suffix):
                    return time.perf_counter()

        try:
            return await asyncio.wait_for(look(), timeout)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            return None

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(TimeoutError, OSError, ssl.SSLError):
            await asyncio.wait_for(self.writer.wait_closed(), 5)
