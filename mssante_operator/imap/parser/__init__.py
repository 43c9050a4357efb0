"""IMAP client commands: framing of lines and literals, then parsing into :mod:`..commands` objects.

Pure code, in layers: ``framing`` (lines and literals into complete command bytes), ``lexer`` (the
RFC 3501 tokens), then the grammar: ``commands`` (dispatch and most commands), ``fetch`` (FETCH
items and STORE) and ``search`` (SEARCH criteria). ``errors`` holds what becomes a ``BAD`` reply.
"""

from .commands import parse_command
from .errors import SUPPORTED_CHARSETS, BadCharset, LineTooLong, LiteralTooBig, ParseError
from .framing import CommandFramer, Complete, NeedLiteral, decode_sasl_response, is_done_line

__all__ = [
    "SUPPORTED_CHARSETS",
    "BadCharset",
    "CommandFramer",
    "Complete",
    "LineTooLong",
    "LiteralTooBig",
    "NeedLiteral",
    "ParseError",
    "decode_sasl_response",
    "is_done_line",
    "parse_command",
]
