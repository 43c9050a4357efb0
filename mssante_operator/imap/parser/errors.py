"""Errors of command parsing; each becomes a ``BAD`` (or ``NO [BADCHARSET]``, ``NO [TOOBIG]``) reply."""

from __future__ import annotations

SUPPORTED_CHARSETS = ("UTF-8", "US-ASCII")


class ParseError(Exception):
    """A command the server answers with ``BAD``; ``tag`` is None when no valid tag was read (``* BAD``)."""

    def __init__(self, tag: str | None, message: str) -> None:
        super().__init__(message)
        self.tag = tag
        self.message = message


class LineTooLong(ParseError):
    """The command text (literals excluded) exceeds the framer's ``max_line``: answer BAD."""

    def __init__(self, tag: str | None) -> None:
        super().__init__(tag, "Command line too long")


class LiteralTooBig(ParseError):
    """A literal is larger than the framer accepts; the framer is reset for the next command.

    Synchronising literal (``{N}``): the client waits for ``+`` and sends nothing, so answer
    ``NO [TOOBIG]`` (APPEND, RFC 7889) or ``BAD`` and carry on. Non-synchronising (``{N+}``): the
    client does not wait, the bytes and the rest of the command are already on their way, so
    answer ``BAD [TOOBIG]`` (or ``* BYE``) and close the connection: the alternative, reading up to
    4 GB to throw away and re-framing the command's tail, is a cost an abusive client should not set.
    """

    def __init__(self, tag: str | None, size: int, synchronising: bool = True, command: str | None = None) -> None:
        super().__init__(tag, f"Literal of {size} octets is too big")
        self.size = size
        self.synchronising = synchronising
        self.command = command


class BadCharset(ParseError):
    """SEARCH CHARSET other than UTF-8/US-ASCII: answer ``NO [BADCHARSET (UTF-8 US-ASCII)]``, not BAD.

    A subclass of ParseError so a session that forgets it still answers (BAD); catch it first.
    """

    def __init__(self, tag: str | None, charset: str) -> None:
        super().__init__(tag, f"Unsupported charset {charset}")
        self.charset = charset
        self.supported = SUPPORTED_CHARSETS
