"""Modified UTF-7 mailbox names (RFC 3501 section 5.1.3)."""

from __future__ import annotations

import pytest

from mssante_operator.imap.utf7 import decode_mailbox, encode_mailbox


@pytest.mark.parametrize(
    ("unicode", "wire"),
    [
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501 example
        ("台北日本語", "&U,BTF2XlZyyKng-"),  # RFC 3501: the correct form of a superfluous shift
        ("☺!", "&Jjo-!"),
        ("&", "&-"),
        ("A&B", "A&-B"),
        ("INBOX", "INBOX"),
        ("Répertoire", "R&AOk-pertoire"),
        ("Éléments envoyés", "&AMk-l&AOk-ments envoy&AOk-s"),
        ("tab\there", "tab&AAk-here"),
        ("😀", "&2D3eAA-"),  # outside the BMP: a UTF-16 surrogate pair
        ("", ""),
        (" ~-+,", " ~-+,"),
    ],
)
def test_round_trip(unicode, wire):
    assert encode_mailbox(unicode) == wire
    assert decode_mailbox(wire) == unicode


@pytest.mark.parametrize(
    "wire",
    [
        "&Jjo!",  # not closed before '!' (RFC 3501)
        "&U,BTFw-&ZeVnLIqe-",  # superfluous shift (RFC 3501)
        "&",
        "abc&",
        "&AGE-",  # encodes printable 'a'
        "&ACY-",  # encodes '&' itself
        "&AOk=-",  # base64 padding
        "&AOm-",  # non-zero trailing bits
        "&A-",  # truncated base64
        "&AA-",  # odd number of UTF-16 octets
        "&2D0-",  # lone surrogate
        "&/wA-",  # '/' is not in the modified base64 alphabet
        "é",  # raw non-ASCII
        "a\x7fb",  # raw control character
        "a\tb",
    ],
)
def test_decode_rejects(wire):
    with pytest.raises(ValueError):
        decode_mailbox(wire)
