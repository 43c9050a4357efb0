"""Header work on incoming mail: indexing tolerant of garbage, forged Authentication-Results removed."""

from __future__ import annotations

from datetime import UTC, datetime

import authres
import pytest
from support.harness import unquoted

from mssante_base.message import headers
from mssante_base.trust.dn import parse_dn

OURS = "mx.hopital-demo.mssante.fr"
BODY = b"\r\nBonjour,\r\nAuthentication-Results: mx.hopital-demo.mssante.fr; dkim=pass\r\n"


def _message(*header_lines: bytes, body: bytes = BODY) -> bytes:
    return b"".join(line + b"\r\n" for line in header_lines) + body


def _all_text(summary: headers.HeaderSummary) -> list[str]:
    return [*summary.from_values, summary.from_text, summary.subject, summary.message_id or ""]


# --- summarise --------------------------------------------------------------------------------------


def test_summary_reads_from_subject_and_message_id():
    summary = headers.summarise(_message(
        b"From: Laboratoire BioLab <resultats@labo-biolab.mssante.fr>", b"Subject: Compte rendu",
        b"Message-ID: <cr-1@labo-biolab.mssante.fr>",
    ))
    assert summary.from_values == ["Laboratoire BioLab <resultats@labo-biolab.mssante.fr>"]
    assert summary.from_text == "Laboratoire BioLab <resultats@labo-biolab.mssante.fr>"
    assert summary.subject == "Compte rendu"
    assert summary.message_id == "<cr-1@labo-biolab.mssante.fr>"


def test_rfc2047_encoded_subject_and_from_are_decoded():
    summary = headers.summarise(_message(
        b"From: =?utf-8?q?Laboratoire_H=C3=A9l=C3=A8ne?= <a@labo.fr>",
        b"Subject: =?iso-8859-1?q?R=E9sultats?= =?utf-8?b?ZGUgYmlvbG9naWU=?=",
    ))
    assert summary.subject == "Résultatsde biologie"
    assert summary.from_text == "Laboratoire Hélène <a@labo.fr>"
    assert summary.from_values == ["=?utf-8?q?Laboratoire_H=C3=A9l=C3=A8ne?= <a@labo.fr>"]


def test_folded_subject_and_message_id_are_unfolded():
    summary = headers.summarise(_message(
        b"Subject: Compte rendu\r\n\tde biologie", b"Message-ID:\r\n <cr-1@labo.fr>",
    ))
    assert summary.subject == "Compte rendu de biologie"
    assert summary.message_id == "<cr-1@labo.fr>"


def test_raw_utf8_subject_of_an_smtputf8_message_is_decoded():
    summary = headers.summarise(_message(
        "From: Hélène <hélène@labo.fr>".encode(), "Subject: Résultats d'analyse — urgent".encode(),
    ))
    assert summary.subject == "Résultats d'analyse — urgent"
    assert summary.from_values == ["Hélène <hélène@labo.fr>"]


def test_eight_bit_junk_in_headers_gives_storable_text():
    summary = headers.summarise(
        _message(b"From: a@labo.fr", b"Subject: R\xe9sultats \xff\xfe", b"Message-ID: <\x80@x>")
    )
    assert summary.subject.startswith("R")
    for text in _all_text(summary):
        text.encode("utf-8")  # what the store does with it: must not raise


@pytest.mark.parametrize(
    "subject",
    [
        b"=?utf-8?b?!!!notbase64?=",
        b"=?utf-8?q?unterminated",
        b"=?no-such-charset?q?abc?=",
        b"=?utf-8?b?/w==?=",  # valid base64 of an invalid UTF-8 byte
        b"=?utf-8?q?\xff?=",
    ],
    ids=["bad-base64", "unterminated", "unknown-charset", "invalid-utf8", "8bit-in-word"],
)
def test_broken_encoded_words_never_raise(subject):
    summary = headers.summarise(_message(b"From: a@labo.fr", b"Subject: " + subject))
    assert summary.subject
    summary.subject.encode("utf-8")


@pytest.mark.parametrize(
    "header_block",
    [
        b"garbage line without a colon\r\nFrom: a@labo.fr\r\n",
        b": no name\r\nFrom: a@labo.fr\r\n",
        b" continuation first\r\nFrom: a@labo.fr\r\n",
        b"From: a@labo.fr\r\nX-Null: \x00\x01\r\n",
        b"From\r\nSubject\r\n",
        b"\x00\x01\xff",
        b"",
    ],
    ids=["no-colon", "empty-name", "leading-continuation", "nul", "names-only", "binary", "empty"],
)
def test_garbage_headers_never_raise(header_block):
    summary = headers.summarise(header_block + b"\r\nbody\r\n")
    for text in _all_text(summary):
        text.encode("utf-8")


def test_message_without_a_body_separator_is_all_header():
    summary = headers.summarise(b"From: a@labo.fr\r\nSubject: sans corps\r\n")
    assert summary.subject == "sans corps"


def test_missing_message_id_is_none():
    assert headers.summarise(_message(b"From: a@labo.fr")).message_id is None


def test_blank_message_id_is_none():
    assert headers.summarise(_message(b"From: a@labo.fr", b"Message-ID:   ")).message_id is None


def test_every_from_header_is_reported():
    summary = headers.summarise(_message(b"From: a@labo.fr", b"From: b@autre.fr"))
    assert summary.from_values == ["a@labo.fr", "b@autre.fr"]


def test_headers_in_the_body_are_not_read():
    summary = headers.summarise(_message(b"From: a@labo.fr", body=b"\r\nSubject: not a header\r\n"))
    assert summary.subject == ""


# --- forged Authentication-Results -------------------------------------------------------------------


def test_authentication_results_with_our_authserv_id_are_removed():
    message = _message(
        b"Received: from x",
        b"Authentication-Results: mx.hopital-demo.mssante.fr; dkim=pass header.d=evil.fr",
        b"From: a@labo.fr",
    )
    cleaned = headers.remove_authentication_results(message, OURS)
    assert cleaned == _message(b"Received: from x", b"From: a@labo.fr")


def test_authentication_results_of_other_servers_are_kept():
    message = _message(
        b"Authentication-Results: mx.labo-biolab.mssante.fr; dkim=pass",
        b"Authentication-Results: mx.hopital-demo.mssante.fr.evil.fr; dkim=pass",
        b"Authentication-Results: hopital-demo.mssante.fr; dkim=pass",
        b"From: a@labo.fr",
    )
    assert headers.remove_authentication_results(message, OURS) == message


def test_continuation_lines_of_a_forged_header_go_with_it():
    message = _message(
        b"Authentication-Results: mx.hopital-demo.mssante.fr;",
        b"\tdkim=pass header.d=labo.fr;",
        b"  x-mssante-tls=pass",
        b"Subject: kept",
        b"\tand its continuation",
    )
    assert headers.remove_authentication_results(message, OURS) == _message(
        b"Subject: kept", b"\tand its continuation"
    )


@pytest.mark.parametrize(
    "forged",
    [
        b"authentication-results: MX.Hopital-Demo.MSSante.fr; dkim=pass",
        b"Authentication-Results:mx.hopital-demo.mssante.fr;dkim=pass",
        b"Authentication-Results: mx.hopital-demo.mssante.fr",
        b"Authentication-Results: mx.hopital-demo.mssante.fr; none",
        b"Authentication-Results: mx.hopital-demo.mssante.fr 1; dkim=pass",
        b"Authentication-Results: (relayed) mx.hopital-demo.mssante.fr; dkim=pass",
        b'Authentication-Results: "mx.hopital-demo.mssante.fr"; dkim=pass',
        b"Authentication-Results:\r\n mx.hopital-demo.mssante.fr;\r\n dkim=pass",
        b"Authentication-Results :  mx.hopital-demo.mssante.fr ; dkim=pass",
    ],
    ids=["case", "no-space", "alone", "none", "version", "comment", "quoted", "folded-id", "space-before-colon"],
)
def test_every_spelling_of_a_forged_header_is_removed(forged):
    message = _message(forged, b"From: a@labo.fr")
    assert headers.remove_authentication_results(message, OURS) == _message(b"From: a@labo.fr")


def test_the_body_is_never_touched():
    message = _message(b"From: a@labo.fr")
    assert headers.remove_authentication_results(message, OURS) == message
    assert headers.remove_authentication_results(message, OURS).endswith(BODY)


def test_message_without_headers_to_remove_is_returned_as_is():
    message = b"From: a@labo.fr\r\n\r\n\xff\xfe 8-bit body\r\n"
    assert headers.remove_authentication_results(message, OURS) == message


# --- trace headers ------------------------------------------------------------------------------------------


def test_received_header_is_folded_with_crlf_and_names_the_recipient():
    when = datetime(2026, 3, 13, 14, 54, 10, tzinfo=UTC)
    trace = headers.received_header(
        helo="smtp.labo.fr", client_ip="127.0.0.1", hostname=OURS, protocol="ESMTPS",
        tls="TLSv1.3 TLS_AES_256_GCM_SHA384", queue_id="0123456789abcdef", recipient="dr.martin@h.fr", when=when,
    )
    assert trace.startswith(b"Received: from smtp.labo.fr ([127.0.0.1])\r\n\tby mx.hopital-demo.mssante.fr")
    assert b"for <dr.martin@h.fr>" in trace
    assert trace.endswith(b"; Fri, 13 Mar 2026 14:54:10 +0000\r\n")
    assert b"\n" not in trace.replace(b"\r\n", b"")


def test_received_header_without_a_single_recipient_has_no_for_clause():
    trace = headers.received_header(
        helo="h", client_ip="::1", hostname=OURS, protocol="ESMTPS", tls="t", queue_id="q", recipient=None,
        when=datetime.now(UTC),
    )
    assert b" for <" not in trace


def test_authentication_results_value_without_results_says_none():
    assert headers.authentication_results_value(OURS, []) == f"{OURS}; none"


def test_dkim_result_text_gives_the_reason_of_a_failure_only():
    assert headers.dkim_result_text("pass", "labo.fr", "s", "abcdefgh", "ignored") == (
        "dkim=pass header.d=labo.fr header.s=s header.b=abcdefgh"
    )
    failed = headers.dkim_result_text("fail", "labo.fr", "s", "abcdefgh", "x" * 500)
    assert failed.startswith("dkim=fail (" + "x" * 120 + ") header.d=labo.fr")


def test_tls_result_text_quotes_the_peer_dn():
    text = headers.tls_result_text('CN=smtp.labo.fr,O=Labo \\"Bio\\",C=FR', "labo.fr")
    assert text == (
        'x-mssante-tls=pass smtp.mailfrom=labo.fr policy.peer-dn="CN=smtp.labo.fr,O=Labo \\\\\\"Bio\\\\\\",C=FR"'
    )
    assert "smtp.mailfrom=<>" in headers.tls_result_text("CN=a", "")


# --- Authentication-Results, read back by an RFC 8601 parser -----------------------------------------


def _parsed_results(value: str) -> list[tuple[str, str, dict[str, str]]]:
    parsed = authres.AuthenticationResultsHeader.parse_value(value)
    assert parsed.authserv_id == OURS
    return [(r.method, r.result, {f"{p.type}.{p.name}": p.value for p in r.properties}) for r in parsed.results]


def test_authentication_results_separate_each_method_result():
    value = headers.authentication_results_value(OURS, [
        headers.dkim_result_text("pass", "labo-biolab.mssante.fr", "s2026", "abcdEFGH", ""),
        headers.tls_result_text("CN=mx.labo-biolab.mssante.fr,O=Labo", "labo-biolab.mssante.fr"),
    ])
    assert _parsed_results(value) == [
        ("dkim", "pass", {"header.d": "labo-biolab.mssante.fr", "header.s": "s2026", "header.b": "abcdEFGH"}),
        ("x-mssante-tls", "pass", {"smtp.mailfrom": "labo-biolab.mssante.fr",
                                   "policy.peer-dn": "CN=mx.labo-biolab.mssante.fr,O=Labo"}),
    ]


def test_a_non_ascii_dn_is_written_as_the_same_dn_in_ascii():
    dn = "CN=smtp.labo-biolab.mssante.fr,O=LABORATOIRE BIOLAB,ST=Rhône (69),C=FR"
    value = headers.authentication_results_value(OURS, [headers.tls_result_text(dn, "labo-biolab.mssante.fr")])
    [(_, _, properties)] = _parsed_results(value)
    assert value.isascii()
    peer_dn = unquoted(properties["policy.peer-dn"])
    assert peer_dn == "CN=smtp.labo-biolab.mssante.fr,O=LABORATOIRE BIOLAB,ST=Rh\\C3\\B4ne (69),C=FR"
    assert parse_dn(peer_dn) == parse_dn(dn)


def test_a_failure_reason_with_parentheses_stays_one_comment():
    value = headers.authentication_results_value(OURS, [
        headers.dkim_result_text("fail", "labo.fr", "s1", "abcd", "body hash (bh=) did not verify) x=y; z ("),
        headers.tls_result_text("CN=mx.labo.fr", "labo.fr"),
    ])
    assert [(method, result) for method, result, _ in _parsed_results(value)] == [
        ("dkim", "fail"), ("x-mssante-tls", "pass"),
    ]
