"""IMAP response encoding: NIL, numbers, quoted strings and literals, lists, atoms, INTERNALDATE."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from mssante_operator.imap.wire import Atom, Concat, Literal, Packed, encode, format_internaldate, literal, quoted

# --- scalars ----------------------------------------------------------------------------------------


def test_none_is_nil_and_the_string_nil_is_quoted():
    assert encode(None) == b"NIL"
    assert encode("NIL") == b'"NIL"'
    assert encode("nil") == b'"nil"'
    assert encode(Atom("NIL")) == b"NIL"


def test_numbers():
    assert encode(0) == b"0"
    assert encode(4294967295) == b"4294967295"
    assert encode(2**40) == b"1099511627776"  # sizes past 4 GB are not cut


def test_negative_numbers_and_bools_are_refused():
    with pytest.raises(ValueError):
        encode(-1)
    with pytest.raises(TypeError):
        encode(True)


def test_unknown_types_are_refused():
    with pytest.raises(TypeError):
        encode(1.5)
    with pytest.raises(TypeError):
        encode({"a": 1})


def test_plain_strings_are_quoted_with_backslash_and_quote_escaped():
    assert encode("IMAP4rev1 WG mtg") == b'"IMAP4rev1 WG mtg"'
    assert encode("") == b'""'
    assert encode('say "hi"') == b'"say \\"hi\\""'
    assert encode("C:\\dir") == b'"C:\\\\dir"'
    assert encode("tab\there") == b'"tab\there"'


def test_bytes_like_strings():
    assert encode(b"abc") == b'"abc"'
    assert encode(bytearray(b"abc")) == b'"abc"'
    assert encode(memoryview(b"abc")) == b'"abc"'


@pytest.mark.parametrize("text", ["line\r\nbreak", "bare\nlf", "bare\rcr", "nul\x00byte"])
def test_control_characters_force_a_literal(text):
    data = text.encode()
    assert encode(text) == b"{%d}\r\n" % len(data) + data


def test_non_ascii_goes_as_a_utf8_literal():
    assert encode("Résultats") == b"{10}\r\nR\xc3\xa9sultats"
    assert encode(b"\xe9t\xe9") == b"{3}\r\n\xe9t\xe9"


def test_surrogate_escapes_are_written_back_as_the_original_bytes():
    raw = b"Caf\xe9 \xff"  # Latin-1 junk: not UTF-8
    assert encode(raw.decode("utf-8", "surrogateescape")) == b"{6}\r\n" + raw


def test_lone_surrogates_do_not_raise():
    assert encode("a\ud800b") == b'"a?b"'


def test_long_strings_go_as_literals():
    assert encode("x" * 1024) == b'"' + b"x" * 1024 + b'"'
    assert encode("x" * 1025) == b"{1025}\r\n" + b"x" * 1025


def test_quoted_helper():
    assert quoted("a\"b\\c") == b'"a\\"b\\\\c"'
    assert quoted(b"x") == b'"x"'
    for bad in ("a\r\nb", "é", "a\x00"):
        with pytest.raises(ValueError):
            quoted(bad)


def test_literal_helper_and_forced_literal():
    assert literal(b"") == b"{0}\r\n"
    assert literal(b"hello") == b"{5}\r\nhello"
    assert encode(Literal(b"hello")) == b"{5}\r\nhello"
    assert encode(Literal("é")) == b"{2}\r\n\xc3\xa9"
    assert encode([Literal(b"a"), Literal(b"")]) == b"({1}\r\na {0}\r\n)"


# --- atoms --------------------------------------------------------------------------------------------


def test_atoms_are_written_as_is():
    assert encode(Atom("\\Seen")) == b"\\Seen"
    assert encode(Atom("$Forwarded")) == b"$Forwarded"
    assert encode(Atom("BODY[HEADER.FIELDS (FROM)]")) == b"BODY[HEADER.FIELDS (FROM)]"


@pytest.mark.parametrize("text", ["", "a\r\nb", "a\nb", "\x00", "é"])
def test_atoms_that_could_break_the_line_are_refused(text):
    with pytest.raises(ValueError):
        Atom(text)


# --- lists ----------------------------------------------------------------------------------------------


def test_lists_and_tuples_are_space_separated_and_nested():
    assert encode([]) == b"()"
    assert encode(()) == b"()"
    assert encode([1, "a", None]) == b'(1 "a" NIL)'
    assert encode([[Atom("\\Seen"), Atom("\\Answered")], []]) == b"((\\Seen \\Answered) ())"


def test_a_fetch_response_shape():
    response = [Atom("UID"), 4827313, Atom("FLAGS"), [Atom("\\Seen")], Atom("RFC822.SIZE"), 44827]
    assert encode(response) == b"(UID 4827313 FLAGS (\\Seen) RFC822.SIZE 44827)"


def test_packed_lists_have_no_separators():
    addresses = Packed([["A", None, "a", "x.org"], [None, None, "b", "y.org"]])
    assert encode(addresses) == b'(("A" NIL "a" "x.org")(NIL NIL "b" "y.org"))'
    assert encode(Packed([])) == b"()"


def test_concat_writes_bodies_back_to_back_without_parentheses():
    body = [Concat([["TEXT", "PLAIN"], ["IMAGE", "GIF"]]), "MIXED"]
    assert encode(body) == b'(("TEXT" "PLAIN")("IMAGE" "GIF") "MIXED")'


def test_literals_inside_lists():
    assert encode(["a", "é"]) == b'("a" {2}\r\n\xc3\xa9)'


# --- INTERNALDATE ------------------------------------------------------------------------------------------


def test_internaldate_rfc3501_example():
    pdt = timezone(timedelta(hours=-7))
    assert format_internaldate(datetime(1996, 7, 17, 2, 44, 25, tzinfo=pdt)) == "17-Jul-1996 02:44:25 -0700"


def test_internaldate_day_is_space_padded():
    paris = timezone(timedelta(hours=2))
    assert format_internaldate(datetime(2024, 5, 7, 9, 5, 3, tzinfo=paris)) == " 7-May-2024 09:05:03 +0200"


def test_internaldate_naive_is_utc_and_odd_offsets():
    assert format_internaldate(datetime(2024, 12, 31, 23, 59, 59)) == "31-Dec-2024 23:59:59 +0000"
    assert format_internaldate(datetime(2024, 1, 1, tzinfo=UTC)) == " 1-Jan-2024 00:00:00 +0000"
    india = timezone(timedelta(hours=5, minutes=30))
    assert format_internaldate(datetime(2024, 2, 29, 12, 0, tzinfo=india)).endswith(" +0530")
    newfoundland = timezone(-timedelta(hours=3, minutes=30))
    assert format_internaldate(datetime(2024, 2, 29, 12, 0, tzinfo=newfoundland)).endswith(" -0330")


def test_internaldate_encodes_as_a_quoted_string():
    when = datetime(1996, 7, 17, 2, 44, 25, tzinfo=timezone(timedelta(hours=-7)))
    assert encode(format_internaldate(when)) == b'"17-Jul-1996 02:44:25 -0700"'
