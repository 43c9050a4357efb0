"""The DATA payload after it is read: the line-length check and the transparency dots (RFC 5321 4.5.2)."""

from __future__ import annotations

import itertools

from mssante_base.smtp.server import unstuffed

MAX_LINE = 3  # small, so every arrangement of short payloads around the limit is tried


def _line_by_line(stuffed: bytes, max_line: int) -> bytes | None:
    """What the session did before: split into lines, compare the longest, undo the dots."""
    if max(map(len, stuffed.split(b"\r\n")), default=0) > max_line + 1:  # + 1: a transparency dot
        return None
    content = stuffed[1:] if stuffed.startswith(b".") else stuffed
    return content.replace(b"\r\n.", b"\r\n")


def _payloads(alphabet: list[bytes], longest: int) -> list[bytes]:
    return [b"".join(p) for n in range(longest + 1) for p in itertools.product(alphabet, repeat=n)]


def test_same_as_the_line_by_line_reading() -> None:
    """Every payload of up to 6 pieces among a, dot, CR, LF and CRLF (bare line endings included)."""
    for payload in _payloads([b"a", b".", b"\r", b"\n", b"\r\n"], 6):
        assert unstuffed(payload, MAX_LINE) == _line_by_line(payload, MAX_LINE), payload


def test_boundaries_of_a_real_limit() -> None:
    ok, stuffed_ok = b"x" * 998 + b"\r\n", b"." + b"x" * 998 + b"\r\n"
    assert unstuffed(b"a\r\n" + ok + b"b\r\n", 998) == b"a\r\n" + ok + b"b\r\n"
    assert unstuffed(b"a\r\n" + stuffed_ok, 998) == b"a\r\n" + b"x" * 998 + b"\r\n"
    assert unstuffed(b"a\r\n" + b"x" * 1000 + b"\r\n", 998) is None
    assert unstuffed(b"a\r\n" + b"x" * 1000, 998) is None  # the last line, without its CRLF
