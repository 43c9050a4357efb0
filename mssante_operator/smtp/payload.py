"""The DATA payload on the wire (RFC 5321 4.5.2), shared by every client we run: outbound, LMTP, send-bulk."""

from __future__ import annotations

import re

LINE_ENDINGS = re.compile(rb"\r\n|\r|\n")


def dot_stuffed(message: bytes) -> bytes:
    """CRLF line endings, a leading dot doubled, the ``.`` terminator line added.

    The usual message is clean already (counted in C), so the regular expression runs only for one
    that is not; the stuffing itself is one C-level replace.
    """
    crlf = message.count(b"\r\n")
    if message.count(b"\n") != crlf or message.count(b"\r") != crlf:
        message = LINE_ENDINGS.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    stuffed = message.replace(b"\r\n.", b"\r\n..")
    return (b"." + stuffed if stuffed.startswith(b".") else stuffed) + b".\r\n"
