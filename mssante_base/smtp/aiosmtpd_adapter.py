"""Every touch of aiosmtpd's (and asyncio.StreamReader's) private internals, in one place.

aiosmtpd offers its extension points as private methods: a listener that checks addresses before its
handler, answers ``421`` on idle timeout or reads DATA in one search must override or call them. This
module does so once, under public names; the rest of the code subclasses :class:`AdaptedSMTP` and uses
only those. pyproject.toml pins aiosmtpd to the versions tested, and tests/test_smtp_internals.py checks
each internal below, naming it, so an upgrade that moves one fails there first.

Internals used, and why:

- ``SMTP._getaddr(arg)``: the MAIL/RCPT path parser; routed to :meth:`AdaptedSMTP.read_path` (a fast path
  for plain addresses), aiosmtpd's own kept as :meth:`AdaptedSMTP.rfc5322_path`.
- ``SMTP._call_handler_hook(command, *args)``: every handler call; routed to
  :meth:`AdaptedSMTP.call_handler_hook`, so checks can run before the MAIL and RCPT hooks.
- ``SMTP._set_post_data_state()``: the envelope reset after DATA, for our own DATA
  (:meth:`AdaptedSMTP.end_transaction`).
- ``SMTP._timeout_cb()``: the idle timer's callback; routed to :meth:`AdaptedSMTP.on_idle_timeout` (421
  before closing).
- ``SMTP._reset_timeout(duration)`` and ``SMTP._timeout_handle``: the idle timer, shortened under pressure
  (:meth:`AdaptedSMTP.idle_duration`, :meth:`AdaptedSMTP.restart_idle_timer`,
  :meth:`AdaptedSMTP.idle_deadline`).
- ``SMTP._original_transport``: set by STARTTLS; tells the upgrade's second ``connection_made`` from a new
  connection (:attr:`AdaptedSMTP.after_starttls`).
- ``SMTP._create_envelope()``: the envelope factory (:meth:`AdaptedSMTP.create_envelope`).
- ``SMTP._reader`` and ``SMTP._handle_client`` reading command lines with ``self._reader.readuntil()``: the
  reader's class is swapped for :class:`StrictLineReader` (:meth:`AdaptedSMTP.use_strict_reader`); what it
  holds unread is :meth:`AdaptedSMTP.unread_input`.
- the ``__smtp_syntax__`` marks of ``aiosmtpd.smtp.syntax``, read by HELP: an override keeps them
  (:func:`keeps_syntax`), else HELP stops listing the command.
- ``StreamReader._buffer``, ``_limit``, ``_eof``, ``_wait_for_data(func_name)`` and
  ``_maybe_resume_transport()``: :meth:`StrictLineReader.read_data` searches the buffer for the end of
  DATA the way ``StreamReader.readuntil`` does, since the public API cannot start a search at a line start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar, cast

from aiosmtpd.smtp import SMTP, Envelope, syntax

__all__ = ["AdaptedSMTP", "BareLineEnding", "LineTooLong", "StrictLineReader", "keeps_syntax", "syntax"]

_Method = TypeVar("_Method", bound=Callable[..., Any])

# The attributes aiosmtpd.smtp.syntax sets on a command method (HELP reads them).
SYNTAX_MARKS = ("__smtp_syntax__", "__smtp_syntax_extended__", "__smtp_syntax_when__")


def keeps_syntax(command: str) -> Callable[[_Method], _Method]:
    """Decorate an override of aiosmtpd's ``smtp_<command>`` so HELP still lists it, with aiosmtpd's syntax."""
    original = getattr(SMTP, f"smtp_{command}")
    text, extended, when = (getattr(original, mark) for mark in SYNTAX_MARKS)
    return cast(Callable[[_Method], _Method], syntax(text, extended=extended, when=when))


class BareLineEnding(Exception):
    """A command line ended with a bare LF (or held a bare CR)."""


class LineTooLong(Exception):
    """A command line longer than the stream limit: read to its end and dropped."""


class StrictLineReader(asyncio.StreamReader):
    """Refuses command lines that do not end with CRLF, and reads DATA in one C-level search.

    aiosmtpd reads DATA line by line in Python, which dominates the cost of a 50 KB report; here the
    whole payload is found by searching for the only terminator RFC 5321 allows, CRLF "." CRLF,
    so a bare-LF "\\n.\\n" can never end a message (SMTP smuggling).
    """

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        try:
            line = await super().readuntil(separator)
        except asyncio.LimitOverrunError as error:
            if separator != b"\n":
                raise
            await self._discard_line(error.consumed)
            raise LineTooLong from None
        if separator == b"\n" and (not line.endswith(b"\r\n") or b"\r" in line[:-2]):
            raise BareLineEnding
        return line

    async def _discard_line(self, consumed: int) -> None:
        """Drop the rest of an over-long line, up to and with its LF (aiosmtpd would read the tail of the
        line as a line of its own, and a tail holding only the LF as a bare LF)."""
        while True:
            await self.read(consumed)
            try:
                await super().readuntil(b"\n")
                return
            except asyncio.LimitOverrunError as error:
                consumed = error.consumed

    async def read_data(self, max_size: int, on_progress: Callable[[], None]) -> bytes | None:
        """The dot-stuffed payload (final CRLF kept, terminator dropped).

        Returns None when the payload exceeded ``max_size``: it is read and discarded, so
        the session can answer 552 and go on. This extends StreamReader.readuntil with the rule
        that the payload starts at a line start (a payload of just "." CRLF is empty), using the
        same internals readuntil uses, since the public API cannot search from a virtual CRLF.
        """
        buffer: bytearray = self._buffer  # type: ignore[attr-defined]
        line_limit = self._limit  # type: ignore[attr-defined]
        self._limit = max_size + 5  # type: ignore[attr-defined]  # flow control: pause at 2x this
        at_start, scanned, discarded = True, 0, 0
        try:
            while True:
                if at_start and buffer[:3] == b".\r\n"[: len(buffer)]:
                    if len(buffer) >= 3:
                        del buffer[:3]
                        return b""
                else:
                    end = buffer.find(b"\r\n.\r\n", max(0, scanned - 4))
                    if end >= 0:
                        # The whole message may have arrived before the first search (a fast
                        # peer, a large TLS record): its size is checked here, not only while waiting.
                        too_big = discarded or end + 2 > max_size
                        payload = bytes(buffer[: end + 2])
                        del buffer[: end + 5]
                        return None if too_big else payload
                    scanned = len(buffer)
                    # Without a terminator in it, the buffer holds the payload and at most "." CR of the
                    # terminator: only past max_size + 2 octets is the payload surely too big.
                    if scanned > max_size + 2:
                        discarded += scanned - 4
                        del buffer[:-4]
                        scanned = 4
                    at_start = False
                if self._eof:  # type: ignore[attr-defined]
                    raise asyncio.IncompleteReadError(bytes(buffer), None)
                await self._wait_for_data("read_data")  # type: ignore[attr-defined]
                on_progress()  # bytes are flowing: the peer is slow, not idle
        finally:
            self._limit = line_limit  # type: ignore[attr-defined]
            self._maybe_resume_transport()  # type: ignore[attr-defined]


class AdaptedSMTP(SMTP):
    """aiosmtpd's SMTP with its private extension points under public names (see the module docstring).

    Each default keeps aiosmtpd's behaviour; subclasses override the public name, never the private one.
    """

    # --- MAIL/RCPT paths and handler hooks --------------------------------------------------

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        return self.read_path(arg)

    def read_path(self, arg: str) -> tuple[str | None, str | None]:
        """The address of a MAIL/RCPT argument and the rest; (None, None) when unreadable."""
        return self.rfc5322_path(arg)

    def rfc5322_path(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's own reading of a MAIL/RCPT argument (RFC 5322 parser, ``local_part_limit`` applied)."""
        return super()._getaddr(arg)

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        return await self.call_handler_hook(command, *args)

    async def call_handler_hook(self, command: str, *args: Any) -> Any:
        """Run the handler's ``handle_<command>``; MISSING when it has none."""
        return await super()._call_handler_hook(command, *args)

    def end_transaction(self) -> None:
        """A fresh envelope, as after DATA (our DATA reader ends each transaction with it)."""
        self._set_post_data_state()

    def _create_envelope(self) -> Envelope:
        return self.create_envelope()

    def create_envelope(self) -> Envelope:
        """The envelope of a new transaction."""
        return super()._create_envelope()

    # --- idle timer -------------------------------------------------------------------------

    def _timeout_cb(self) -> None:
        self.on_idle_timeout()

    def on_idle_timeout(self) -> None:
        """The session said nothing for the idle timeout: aiosmtpd closes the connection."""
        super()._timeout_cb()

    def _reset_timeout(self, duration: float | None = None) -> None:
        super()._reset_timeout(self.idle_duration(duration))

    def idle_duration(self, duration: float | None) -> float | None:
        """The idle timeout to arm (``duration`` asked, or None for the listener's own)."""
        return duration

    def restart_idle_timer(self, duration: float | None = None) -> None:
        """Arm the idle timer again: for ``duration`` seconds, or for :meth:`idle_duration`'s choice."""
        self._reset_timeout(duration)

    def idle_deadline(self) -> float | None:
        """When (loop time) the idle timer fires; None when it is not armed."""
        handle = self._timeout_handle
        return None if handle is None else handle.when()

    # --- connection and reader --------------------------------------------------------------

    @property
    def after_starttls(self) -> bool:
        """True from STARTTLS on: ``connection_made`` is then the TLS upgrade, not a new connection."""
        return self._original_transport is not None

    def use_strict_reader(self) -> None:
        """Read this connection through :class:`StrictLineReader` (call after the first ``connection_made``)."""
        self._reader.__class__ = StrictLineReader

    def unread_input(self) -> bytes:
        """What the client sent that the session has not read yet (pipelined commands, say)."""
        return bytes(self._reader._buffer)  # type: ignore[attr-defined]

    async def read_data(self, max_size: int) -> bytes | None:
        """The DATA payload, still dot-stuffed (see :meth:`StrictLineReader.read_data`); the idle timer is
        restarted while bytes flow."""
        reader = cast(StrictLineReader, self._reader)
        return await reader.read_data(max_size, self.restart_idle_timer)
