"""Every touch of aiosmtplib's internals, in one place: a DATA payload written, and its replies read, on the
session's protocol.

aiosmtplib's public ``data()`` normalises line endings and dot-stuffs with two regular-expression passes over
the whole message (a fifth of a delivery's CPU for a 50 KB report), and reads one reply after the payload
where LMTP sends one per recipient. So after the server's ``354`` our clients (outbound, LMTP) write the
payload of :func:`~.payload.dot_stuffed` and read the replies themselves, with the two functions below; the
session is used by one sender at a time (the pools hand it out so). pyproject.toml pins aiosmtplib to the
versions tested, and tests/test_smtp_internals.py checks each internal below, naming it.

Internals used, and why:

- ``SMTP.protocol``: the session's ``SMTPProtocol`` (None once disconnected).
- ``SMTPProtocol.write(data)``: writes the payload as it is.
- ``SMTPProtocol.read_response(timeout=...)``: waits for the next reply.
- ``SMTPProtocol._read_response_from_buffer()``: a reply already received. aiosmtplib parses one reply per
  arrival of bytes; LMTP's replies after DATA often arrive together, and ``read_response`` alone would wait
  for the second one until the timeout.
"""

from __future__ import annotations

import aiosmtplib

from .payload import dot_stuffed

__all__ = ["read_reply", "write_message"]


def _protocol(smtp: aiosmtplib.SMTP) -> aiosmtplib.protocol.SMTPProtocol:
    protocol = smtp.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("connection lost before the message was sent")
    return protocol


def write_message(smtp: aiosmtplib.SMTP, raw: bytes) -> None:
    """Write ``raw`` as the DATA payload (CRLF line endings, dot-stuffed, terminated), after the server's 354."""
    _protocol(smtp).write(dot_stuffed(raw))


async def read_reply(smtp: aiosmtplib.SMTP, timeout: float) -> aiosmtplib.SMTPResponse:
    """The next reply after the payload (LMTP: call once per accepted recipient), however the bytes arrived."""
    protocol = _protocol(smtp)
    received = protocol._read_response_from_buffer()
    if received is not None:
        return received
    return await protocol.read_response(timeout=timeout)
