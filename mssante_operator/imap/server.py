"""The IMAP network layer: greeting, framing with literals, STARTTLS, IDLE, limits and timers.

Everything about what a command means lives in ``session.py`` and ``handlers/``; this module
reads bytes, writes bytes, and keeps the connection honest: lines and literals have maximum
sizes, an idle client is logged out (RFC 3501 5.4: at least 30 minutes once authenticated, one
minute before), and a command that cannot be parsed gets BAD without closing the connection
(unless its bytes can no longer be framed).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from mssante_base.connection_limits import ConnectionLimiter, LimitReached
from mssante_base.listening import handshake_failure
from mssante_base.trust.tls import PeerTls, peer_tls

from .. import metrics
from . import handlers as _handlers  # noqa: F401 - importing registers the command handlers
from .commands import Command, Idle, StartTLS
from .parser import (
    BadCharset,
    CommandFramer,
    Complete,
    LineTooLong,
    LiteralTooBig,
    NeedLiteral,
    ParseError,
    is_done_line,
    parse_command,
)
from .session import LOGGED_IN, ServerContext, Session, State, bad, no, ok

log = logging.getLogger(__name__)

# After LOGOUT (or BYE), how long a TLS client gets to answer our close_notify before the socket is
# cut: many clients never answer, and asyncio would hold the socket for 30 s (ssl_shutdown_timeout).
CLOSE_GRACE = 1.0
# Untagged responses are gathered and written together, at the tagged line or once this many bytes wait:
# one TLS record and one send for many small responses, yet never more than this held in memory.
OUTPUT_FLUSH_AT = 64 * 1024


@dataclass(frozen=True)
class ImapLimits:
    max_line: int = 64 * 1024
    max_literal: int = 64 * 1024 * 1024
    login_timeout: float = 60.0
    autologout: float = 30 * 60.0
    idle_timeout: float = 30 * 60.0


_REFUSALS = {
    LimitReached.TOO_MANY_FROM_IP: "Too many connections from your address; try again later",
    LimitReached.TOO_MANY_OVERALL: "Too many connections; try again later",
}


class Disconnect(Exception):
    """End the connection (after writing whatever was due)."""


class ImapConnection:
    """One client connection, from greeting to BYE."""

    def __init__(self, ctx: ServerContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 tls_context: ssl.SSLContext | None, limits: ImapLimits,
                 limiter: ConnectionLimiter | None = None) -> None:
        self.reader, self.writer = reader, writer
        self.tls_context = tls_context
        self.limits = limits
        self.limiter = limiter
        peer = writer.get_extra_info("peername")
        ssl_object = writer.get_extra_info("ssl_object")
        self.peer_ip = peer[0] if peer else "?"
        self._output: list[bytes] = []
        self._output_size = 0
        self.session = Session(ctx, write=self._emit, peer_ip=self.peer_ip, tls=ssl_object is not None,
                               peer_tls=self._peer_certificate(ssl_object))
        self.session.read_response = self._read_response
        self.framer = CommandFramer(max_line=limits.max_line, max_literal=limits.max_literal)
        self._unguard: Callable[[], None] | None = None  # stops the account guard watching this session

    @staticmethod
    def _peer_certificate(ssl_object: ssl.SSLObject | None) -> PeerTls | None:
        if ssl_object is None:
            return None
        found = peer_tls(ssl_object)
        return found if found.certificate is not None else None

    async def _emit(self, data: bytes) -> None:
        """An untagged response (what handlers write): sent with the next flush."""
        self._output.append(data)
        self._output_size += len(data)
        if self._output_size >= OUTPUT_FLUSH_AT:
            await self._flush()

    async def _flush(self) -> None:
        if self._output:
            output, self._output, self._output_size = self._output, [], 0
            self.writer.writelines(output)
            await self.writer.drain()

    async def _write(self, data: bytes) -> None:
        """What ends an exchange (a tagged line, a continuation, BYE): everything pending, then ``data``."""
        self._output.append(data)
        self._output_size += len(data)
        await self._flush()

    def _timeout(self) -> float:
        return self.limits.login_timeout if self.session.state is State.NOT_AUTHENTICATED else self.limits.autologout

    async def _read_line(self, timeout: float | None = None) -> bytes:
        try:
            line = await asyncio.wait_for(self.reader.readuntil(b"\n"), timeout or self._timeout())
        except TimeoutError:
            await self._write(b"* BYE autologout: idle for too long\r\n")
            raise Disconnect from None
        except asyncio.LimitOverrunError:
            await self._write(b"* BYE line too long\r\n")
            raise Disconnect from None
        except (asyncio.IncompleteReadError, ConnectionError):
            raise Disconnect from None
        return line

    async def _read_response(self, challenge: bytes) -> bytes | None:
        """A SASL continuation: send the challenge, return the decoded answer (None: cancelled)."""
        await self._write(b"+ " + base64.b64encode(challenge) + b"\r\n")
        line = (await self._read_line()).rstrip(b"\r\n")
        if line == b"*":
            return None
        try:
            return base64.b64decode(line, validate=True) if line not in (b"", b"=") else b""
        except (binascii.Error, ValueError):
            return None

    async def serve(self) -> None:
        refusal = self.limiter.acquire(self.peer_ip) if self.limiter is not None else None
        if refusal is not None:
            log.warning("imap connection refused peer=%s reason=%r", self.peer_ip, refusal.value)
            with contextlib.suppress(ConnectionError):
                await self._write(f"* BYE [UNAVAILABLE] {_REFUSALS[refusal]}\r\n".encode())
            self.writer.close()
            return
        try:
            with metrics.IMAP_SESSIONS.track_inprogress():
                await self._serve()
        finally:
            if self.limiter is not None:
                self.limiter.release(self.peer_ip)

    async def shutdown(self, close_timeout: float = 2.0, *, reason: str = "server shutting down") -> None:
        """The server stops (or the account was disabled): say BYE (RFC 3501 7.1.5) and close; serve() then
        ends at its next read, normally.

        A command already running finishes first (its reply goes nowhere). BYE is left out when a
        response is still on its way out: written then, it could land inside that response's literal.
        """
        await asyncio.sleep(0)  # a session whose write just resumed writes on first, so the buffer is current
        if not self.writer.is_closing() and not self._output and self.writer.transport.get_write_buffer_size() == 0:
            self.writer.write(f"* BYE {reason}\r\n".encode())
        self.reader.feed_eof()  # as if the client had gone: no further command is read
        await self._close(close_timeout)

    async def _close(self, grace: float) -> None:
        """Close the connection; a TLS peer that does not answer our close_notify within ``grace`` is cut off."""
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), grace)
        except TimeoutError:  # a TLS peer that never answers our close_notify
            self.writer.transport.abort()
        except OSError:  # reset by the peer meanwhile (ssl.SSLError is an OSError)
            pass

    async def _serve(self) -> None:
        capabilities = " ".join(self.session.capabilities())
        await self._write(f"* OK [CAPABILITY {capabilities}] {self.session.ctx.hostname} IMAP4rev1 ready\r\n"
                          .encode())
        try:
            while self.session.state is not State.LOGOUT:
                command = await self._next_command()
                if command is not None:
                    await self._run(command)
        except Disconnect:
            pass
        except ssl.SSLError as exc:  # a bad record, an alert after the handshake: one line, no traceback
            log.info("imap TLS error peer=%s reason=%s", self.peer_ip, exc.reason or exc)
        except ConnectionError:  # the client went away mid-write
            pass
        finally:
            if self._unguard is not None:
                self._unguard()
            await self.session.close()
            await self._close(CLOSE_GRACE)

    async def _next_command(self) -> Command | None:
        """Frame and parse one command; answers BAD (or NO [TOOBIG]) itself and returns None on errors."""
        try:
            event = self.framer.feed_line(await self._read_line())
            while isinstance(event, NeedLiteral):
                if event.synchronising:
                    await self._write(b"+ Ready for literal data\r\n")
                data = await self.reader.readexactly(event.size)
                self.framer.feed_literal(data)
                event = self.framer.feed_line(await self._read_line())
            assert isinstance(event, Complete)
            return parse_command(event.data)
        except LiteralTooBig as exc:
            tag = exc.tag or "*"
            if not exc.synchronising:  # the bytes are on their way: the stream cannot be re-framed
                await self._write(f"{tag} BAD [TOOBIG] literal too big\r\n".encode())
                raise Disconnect from None
            reply = no("message too big", "TOOBIG") if exc.command == "APPEND" else bad("literal too big", "TOOBIG")
            await self._write(reply.line(tag))
        except LineTooLong as exc:
            await self._write(f"{exc.tag or '*'} BAD command line too long\r\n".encode())
            raise Disconnect from None
        except BadCharset as exc:
            await self._write(no("unsupported charset", "BADCHARSET (UTF-8 US-ASCII)").line(exc.tag or "*"))
        except ParseError as exc:
            await self._write(f"{exc.tag or '*'} BAD {exc}\r\n".encode())
        except asyncio.IncompleteReadError:
            raise Disconnect from None
        return None

    async def _run(self, command: Command) -> None:
        if isinstance(command, StartTLS):
            await self._starttls(command)
        elif isinstance(command, Idle):
            await self._idle(command)
        else:
            reply = await self.session.execute(command)
            await self._write(reply.line(command.tag))
        self._watch_account()

    def _watch_account(self) -> None:
        """Once logged in: the account guard closes this session should the account be disabled."""
        guard, principal = self.session.ctx.guard, self.session.principal
        if guard is not None and principal is not None and self._unguard is None:
            self._unguard = guard.register(principal.login, self._account_disabled)

    async def _account_disabled(self) -> None:
        log.info("imap session closed peer=%s user=%s: account disabled", self.peer_ip,
                 self.session.principal.login if self.session.principal else "?")
        await self.shutdown(reason="account disabled")

    async def _starttls(self, command: StartTLS) -> None:
        if self.session.tls or self.tls_context is None:
            await self._write(bad("TLS is already active").line(command.tag))
            return
        if self.session.state is not State.NOT_AUTHENTICATED:
            await self._write(bad("STARTTLS is only allowed before authentication").line(command.tag))
            return
        await self._write(ok("begin TLS negotiation now").line(command.tag))
        try:
            await self.writer.start_tls(self.tls_context, ssl_handshake_timeout=30)
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            log.info("TLS handshake failed peer=%s reason=%s", self.session.peer_ip, handshake_failure(exc))
            raise Disconnect from None
        self.session.tls = True
        self.session.peer_tls = self._peer_certificate(self.writer.get_extra_info("ssl_object"))
        self.framer = CommandFramer(max_line=self.limits.max_line, max_literal=self.limits.max_literal)

    async def _idle(self, command: Idle) -> None:
        """RFC 2177: updates are pushed as they happen until the client sends DONE."""
        session = self.session
        if session.state not in LOGGED_IN:
            await self._write(bad("IDLE needs a logged-in session").line(command.tag))
            return
        await self._write(b"+ idling\r\n")
        await session.refresh()
        await self._flush()
        done_line = asyncio.ensure_future(self._read_line(self.limits.idle_timeout))
        metrics.IMAP_IDLE.inc()
        try:
            while True:
                waiters: set[asyncio.Future[object]] = {done_line}  # type: ignore[arg-type]
                change = asyncio.ensure_future(session.watch.wait()) if session.watch is not None else None
                if change is not None:
                    waiters.add(change)  # type: ignore[arg-type]
                finished, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                if change is not None and change not in finished:
                    change.cancel()
                if done_line in finished:
                    line = done_line.result()
                    reply = ok("IDLE terminated") if is_done_line(line) else bad("expected DONE")
                    await self._write(reply.line(command.tag))
                    return
                await session.refresh()
                await self._flush()  # IDLE: each update goes out as it happens
        finally:
            metrics.IMAP_IDLE.dec()
            if not done_line.done():
                done_line.cancel()
