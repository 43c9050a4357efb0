"""aiosmtpd's own replies leave with RFC 3463 enhanced status codes and our wording."""

from __future__ import annotations

import pytest

from mssante_base.smtp.replies import printable, with_enhanced_code


def _rewrite(reply: str) -> str:
    return with_enhanced_code(reply, max_line=998, max_size=1000)


@pytest.mark.parametrize(
    ("builtin", "expected_start"),
    [
        ("500 Line too long (see RFC5321 4.5.3.1.6)", "500 5.5.2 Line too long: at most 998 characters"),
        ("500 Command line too long", "500 5.5.2 Command line too long"),
        ("552 Error: Too much mail data", "552 5.3.4 Message too big: at most 1000 bytes"),
        ("552 Error: message size exceeds fixed maximum message size", "552 5.3.4 Message too big: at most 1000 bytes"),
        ("530 Must issue a STARTTLS command first", "530 5.7.0 Must issue a STARTTLS command first"),
        ("554 Command refused due to lack of security", "554 5.7.0 Command refused: the TLS handshake failed"),
        ("220 Ready to start TLS", "220 2.0.0 Ready to start TLS"),
        ("354 End data with <CR><LF>.<CR><LF>", "354 End data with <CR><LF>.<CR><LF>"),
    ],
)
def test_known_aiosmtpd_replies_are_reworded(builtin, expected_start):
    assert _rewrite(builtin).startswith(expected_start)


@pytest.mark.parametrize(
    ("builtin", "expected"),
    [
        ("250 OK", "250 2.0.0 OK"),
        ("221 Bye", "221 2.0.0 Bye"),
        ("503 Error: need RCPT command", "503 5.5.1 need RCPT command"),
        ("503 Error: nested MAIL command", "503 5.5.1 nested MAIL command"),
        ("501 Syntax: MAIL FROM: <address>", "501 5.5.4 Syntax: MAIL FROM: <address>"),
        ('500 Error: command "FOO" not recognized', '500 5.5.2 command "FOO" not recognized'),
        ("502 EXPN not implemented", "502 5.5.1 EXPN not implemented"),
        ("555 MAIL FROM parameters not recognized or not implemented",
         "555 5.5.4 MAIL FROM parameters not recognized or not implemented"),
    ],
)
def test_other_builtin_replies_get_the_default_enhanced_code_of_their_class(builtin, expected):
    assert _rewrite(builtin) == expected


@pytest.mark.parametrize(
    "reply",
    [
        "550 5.1.1 Mailbox nobody@hopital-demo.mssante.fr does not exist in the annuaire",
        "550 5.7.20 No DKIM signature",
        "451 4.7.5 The DKIM key could not be fetched now",
        "421 4.7.0 MAIL sent too many times",
        "250 2.0.0 Message accepted, id 0123456789abcdef",
    ],
)
def test_replies_that_already_carry_an_enhanced_code_are_unchanged(reply):
    assert _rewrite(reply) == reply


def test_continuation_lines_of_a_multi_line_reply_are_unchanged():
    assert _rewrite("250-SIZE 1000") == "250-SIZE 1000"


def test_reply_code_without_a_default_is_left_alone():
    assert _rewrite("299 something odd") == "299 something odd"


def test_too_short_reply_is_left_alone():
    assert _rewrite("250") == "250"


def test_size_and_line_limits_come_from_the_configuration():
    reply = with_enhanced_code("552 Error: Too much mail data", max_line=78, max_size=26214400)
    assert reply == "552 5.3.4 Message too big: at most 26214400 bytes are accepted"
    assert "at most 78 characters" in with_enhanced_code("500 Line too long", max_line=78, max_size=1)


def test_printable_escapes_controls_and_invalid_utf8_and_keeps_the_rest():
    text = "a\x00b\x1b[2J\r\n\x85" + b"\xe9".decode("utf-8", "surrogateescape") + "é — ok"
    assert printable(text) == "a\\x00b\\x1b[2J\\x0d\\x0a\\x85\\xe9é — ok"
    clean = "250 2.1.5 Recipient accepted"
    assert printable(clean) is clean
