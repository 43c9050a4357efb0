"""DSN: RFC 3461 parameters (xtext, NOTIFY, ORCPT, RET, ENVID) and RFC 3464 reports read back with Python's email."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage, Message
from email.utils import parseaddr, parsedate_to_datetime

import pytest
from support.harness import lab_report

from mssante_base.message.dsn import (
    DsnSyntaxError,
    MailParameters,
    RcptParameters,
    ReportedRecipient,
    build_report,
    split_mail_parameters,
    split_rcpt_parameters,
    wants_notice,
    xtext_decode,
    xtext_encode,
)

SENDER = "dr.durand@hopital-demo.mssante.fr"
MTA = "mx.hopital-demo.mssante.fr"
DAEMON = "MAILER-DAEMON@hopital-demo.mssante.fr"
NOW = datetime(2026, 5, 4, 10, 30, tzinfo=UTC)

# --- xtext ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["a@b.fr", "a+b=c@x.fr", "with space", "Élodie.Müller@hôpital.fr", "~!\"#",
                                  "ctl\r\n\x00", ""])
def test_xtext_round_trip(text):
    encoded = xtext_encode(text)
    assert re.fullmatch(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*", encoded)
    assert xtext_decode(encoded) == text


def test_xtext_known_values():
    assert xtext_encode("a+b=c d") == "a+2Bb+3Dc+20d"
    assert xtext_decode("a+2Bb@x.fr") == xtext_decode("a+2bb@x.fr") == "a+b@x.fr"
    assert xtext_decode("+C3+A9") == "é"


@pytest.mark.parametrize("bad", ["a+2", "a+ZZb", "a+", "a=b", "a b", "é", "+FF"])
def test_bad_xtext(bad):
    with pytest.raises(DsnSyntaxError):
        xtext_decode(bad)


# --- MAIL FROM parameters -------------------------------------------------------------------------


def test_mail_parameters_extracted_rest_untouched():
    params, rest = split_mail_parameters(" RET=hdrs SIZE=100  ENVID=QQ+2B1-AbC BODY=8BITMIME SMTPUTF8")
    assert params == MailParameters(ret="HDRS", envid="QQ+1-AbC")
    assert rest == " SIZE=100 BODY=8BITMIME SMTPUTF8"


def test_mail_without_dsn_parameters():
    assert split_mail_parameters(" SIZE=100 BODY=7BIT") == (MailParameters(None, None), " SIZE=100 BODY=7BIT")
    assert split_mail_parameters("") == (MailParameters(None, None), "")


def test_envid_keyword_any_case_value_case_kept():
    assert split_mail_parameters(" envid=MixedCase ret=Full")[0] == MailParameters(ret="FULL", envid="MixedCase")


@pytest.mark.parametrize("params", [
    " RET=SOME", " RET=FULL RET=HDRS", " RET=", " RET", " ENVID=" + "x" * 101, " ENVID=a+0D+0AX-Evil:+201",
    " ENVID=+C3+A9", " ENVID=a ENVID=b", " ENVID=bad=",
])
def test_bad_mail_parameters(params):
    with pytest.raises(DsnSyntaxError) as caught:
        split_mail_parameters(params)
    refusal = caught.value.refusal
    assert (refusal.code, refusal.enhanced) == (501, "5.5.4")
    assert refusal.text and refusal.reply.startswith("501 5.5.4 ")


def test_envid_of_100_characters_accepted():
    assert split_mail_parameters(" ENVID=" + "x" * 100)[0].envid == "x" * 100


# --- RCPT TO parameters ---------------------------------------------------------------------------


def test_rcpt_parameters_extracted_rest_untouched():
    params, rest = split_rcpt_parameters(" NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb@x.fr SIZE=100")
    assert params == RcptParameters(notify=("SUCCESS", "FAILURE"), orcpt="rfc822;a+b@x.fr")
    assert rest == " SIZE=100"


def test_notify_case_insensitive_in_canonical_order():
    assert split_rcpt_parameters(" notify=delay,Success")[0].notify == ("SUCCESS", "DELAY")
    assert split_rcpt_parameters(" NOTIFY=never")[0].notify == ("NEVER",)
    assert split_rcpt_parameters(" RET=FULL")[0] == RcptParameters(None, None)  # not an RCPT parameter: left


@pytest.mark.parametrize("params", [
    " NOTIFY=NEVER,SUCCESS", " NOTIFY=SUCCESS,SUCCESS", " NOTIFY=SOMETIMES", " NOTIFY=", " NOTIFY=SUCCESS,",
    " NOTIFY=DELAY NOTIFY=FAILURE", " ORCPT=a@b.fr", " ORCPT=;a@b.fr", " ORCPT=rfc822;", " ORCPT=rfc 822;a",
    " ORCPT=rfc822;a+2", " ORCPT=rfc822;a+0D+0ABcc:+20x@evil.example", " ORCPT=rfc822;" + "a" * 500,
    " ORCPT=rfc822;a@b.fr ORCPT=rfc822;c@d.fr",
])
def test_bad_rcpt_parameters(params):
    with pytest.raises(DsnSyntaxError) as caught:
        split_rcpt_parameters(params)
    assert caught.value.refusal.reply.startswith("501 5.5.4 ")


@pytest.mark.parametrize(("notify", "success", "failure", "delay"), [
    (None, False, True, True),
    (("NEVER",), False, False, False),
    (("SUCCESS",), True, False, False),
    (("FAILURE", "DELAY"), False, True, True),
    (("SUCCESS", "FAILURE", "DELAY"), True, True, True),
])
def test_wants_notice(notify, success, failure, delay):
    assert [wants_notice(notify, e) for e in ("success", "failure", "delay")] == [success, failure, delay]


def test_wants_notice_rejects_unknown_events():
    with pytest.raises(ValueError, match="unknown DSN event"):
        wants_notice(None, "bounce")


# --- reports --------------------------------------------------------------------------------------

ORIGINAL = lab_report(SENDER, ["secretariat@clinique-ouest.mssante.fr"], size=4000, message_id="<cr-1@hopital>")


def _failed(address: str = "inconnu@clinique-ouest.mssante.fr", **changes) -> ReportedRecipient:
    fields = dict(address=address, orcpt=f"rfc822;{address}", action="failed", status="5.1.1",
                  diagnostic=f"550 5.1.1 <{address}>: Recipient address rejected", remote_mta="mx.clinique-ouest.fr",
                  last_attempt=NOW - timedelta(minutes=1), will_retry_until=None)
    return ReportedRecipient(**{**fields, **changes})


def _report(recipients: list[ReportedRecipient], *, original: bytes = ORIGINAL, ret: str | None = None,
            envid: str | None = "ENV-42") -> bytes:
    return build_report(reporting_mta=MTA, original_sender=SENDER, envid=envid, ret=ret, recipients=recipients,
                        original=original, arrival=NOW - timedelta(hours=2), now=NOW, from_address=DAEMON)


def _parse(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def _assert_wire_safe(raw: bytes) -> None:
    assert b"\n" not in raw.replace(b"\r\n", b""), "bare LF"
    assert b"\r" not in raw.replace(b"\r\n", b""), "bare CR"
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def _status_blocks(report: EmailMessage) -> list[Message]:
    [status] = [part for part in report.iter_parts() if part.get_content_type() == "message/delivery-status"]
    return status.get_payload()


def test_failure_report_structure_and_headers():
    raw = _report([_failed()])
    _assert_wire_safe(raw)
    report = _parse(raw)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert [p.get_content_type() for p in report.iter_parts()] == [
        "text/plain", "message/delivery-status", "message/rfc822"]
    assert report["MIME-Version"] == "1.0"
    assert report["Auto-Submitted"] == "auto-replied"
    assert report["From"].addresses[0].display_name == "Système de messagerie"
    assert report["From"].addresses[0].addr_spec == DAEMON
    assert parseaddr(str(report["To"]))[1] == SENDER
    assert str(report["Subject"]) == "Non remis : Résultats de biologie"
    assert parsedate_to_datetime(str(report["Date"])) == NOW
    assert re.fullmatch(r"<[^<>@\s]+@mx\.hopital-demo\.mssante\.fr>", str(report["Message-ID"]))
    assert not report.defects and not any(part.defects for part in report.walk())


def test_human_part_french_then_english():
    report = _parse(_report([_failed()]))
    text = next(report.iter_parts()).get_content()
    french = text.index("Votre message n'a pas pu être remis")
    english = text.index("Your message could not be delivered")
    assert french < english
    assert len(re.findall(r"^  inconnu@clinique-ouest\.mssante\.fr ?: 550 5\.1\.1 ", text, re.M)) == 2


RFC5322_DATE = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}"


def test_delivery_status_fields_follow_rfc_3464():
    recipients = [_failed(), _failed("autre@clinique-ouest.mssante.fr", orcpt=None, remote_mta="", diagnostic="")]
    per_message, first, second = _status_blocks(_parse(_report(recipients)))
    assert per_message["Reporting-MTA"] == f"dns; {MTA}"
    assert per_message["Original-Envelope-Id"] == "ENV-42"
    assert re.fullmatch(RFC5322_DATE, per_message["Arrival-Date"])
    assert parsedate_to_datetime(per_message["Arrival-Date"]) == NOW - timedelta(hours=2)
    assert first["Original-Recipient"] == "rfc822;inconnu@clinique-ouest.mssante.fr"
    assert first["Final-Recipient"] == "rfc822;inconnu@clinique-ouest.mssante.fr"
    assert (first["Action"], first["Status"]) == ("failed", "5.1.1")
    assert first["Remote-MTA"] == "dns; mx.clinique-ouest.fr"
    assert first["Diagnostic-Code"] == (
        "smtp; 550 5.1.1 <inconnu@clinique-ouest.mssante.fr>: Recipient address rejected")
    assert re.fullmatch(RFC5322_DATE, first["Last-Attempt-Date"])
    assert first["Will-Retry-Until"] is None
    assert list(second.keys()) == ["Final-Recipient", "Action", "Status", "Last-Attempt-Date"]


def test_no_envelope_id_no_field():
    [per_message, _] = _status_blocks(_parse(_report([_failed()], envid=None)))
    assert "Original-Envelope-Id" not in per_message


def test_failure_encloses_the_whole_original():
    raw = _report([_failed()], ret="FULL")
    enclosed = _parse(raw).get_payload()[2]
    assert enclosed.get_content_type() == "message/rfc822"
    assert ORIGINAL in raw  # byte for byte, attachment included
    assert enclosed.get_payload()[0]["Message-ID"] == "<cr-1@hopital>"


def test_ret_hdrs_encloses_only_the_header():
    raw = _report([_failed()], ret="HDRS")
    enclosed = _parse(raw).get_payload()[2]
    assert enclosed.get_content_type() == "text/rfc822-headers"
    header_block = ORIGINAL[:ORIGINAL.index(b"\r\n\r\n") + 4]
    assert header_block in raw
    assert b"compte-rendu.pdf" not in raw and b"Veuillez trouver" not in raw


@pytest.mark.parametrize(("action", "status", "subject"), [
    ("delivered", "2.0.0", "Remis : Résultats de biologie"),
    ("relayed", "2.0.0", "Transmis : Résultats de biologie"),
    ("delayed", "4.4.1", "Retardé : Résultats de biologie"),
])
def test_success_and_delay_reports_carry_headers_only(action, status, subject):
    retry = NOW + timedelta(days=4)
    recipient = _failed(action=action, status=status, diagnostic="250 2.0.0 Ok" if status[0] == "2" else "",
                        will_retry_until=retry)
    raw = _report([recipient], ret="FULL")
    _assert_wire_safe(raw)
    report = _parse(raw)
    assert str(report["Subject"]) == subject
    assert report.get_payload()[2].get_content_type() == "text/rfc822-headers"
    [_, block] = _status_blocks(report)
    assert block["Action"] == action
    if action == "delayed":
        assert parsedate_to_datetime(block["Will-Retry-Until"]) == retry
    else:
        assert block["Will-Retry-Until"] is None


def test_mixed_outcomes_named_by_the_failure():
    report = _parse(_report([_failed(action="delivered", status="2.0.0"), _failed("b@c.fr")]))
    assert str(report["Subject"]).startswith("Non remis : ")
    assert report.get_payload()[2].get_content_type() == "message/rfc822"


def test_8bit_original_kept_byte_for_byte():
    original = ("From: Élodie <e@hopital-demo.mssante.fr>\r\nSubject: Échographie — œdème\r\n"
                "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                "Très bien, à demain.\r\n").encode()
    raw = _report([_failed()], original=original)
    _assert_wire_safe(raw)
    assert original in raw
    report = _parse(raw)
    assert report.get_payload()[2]["Content-Transfer-Encoding"] == "8bit"
    assert str(report["Subject"]) == "Non remis : Échographie — œdème"
    assert re.search(rb"^Subject: [\x20-\x7e]+\r\n(?: [\x20-\x7e]+\r\n)*", raw, re.M)  # RFC 2047, not raw 8-bit


def test_lf_only_original_and_missing_subject():
    raw = _report([_failed()], original=b"From: a@b.fr\nTo: c@d.fr\n\nline one\nline two\n")
    _assert_wire_safe(raw)
    assert b"From: a@b.fr\r\nTo: c@d.fr\r\n\r\nline one\r\nline two\r\n" in raw
    assert str(_parse(raw)["Subject"]) == "Non remis : (sans objet)"


def test_long_lines_are_folded_or_cut():
    diagnostic = "550 5.7.1 " + " ".join(["refus"] * 400) + " " + "x" * 3000
    long_header = b"X-Long: " + b"y" * 2000 + b"\r\n"
    original = b"From: a@b.fr\r\nSubject: s\r\n" + long_header + b"\r\n" + b"z" * 1500 + b"\r\n"
    raw = _report([_failed(diagnostic=diagnostic)], original=original)
    _assert_wire_safe(raw)
    report = _parse(raw)
    # a body line over 998 cannot travel: only the header goes back, folded
    assert report.get_payload()[2].get_content_type() == "text/rfc822-headers"
    [_, block] = _status_blocks(report)
    assert block["Diagnostic-Code"].startswith("smtp; 550 5.7.1 refus refus")


def test_values_cannot_inject_fields():
    hostile = _failed(diagnostic="550 no\r\nX-Injected: 1\r\n\r\nFinal-Recipient: rfc822;evil@x",
                      orcpt="rfc822;a@b.fr\r\nX-Injected: 2", remote_mta="mx\r\nX-Injected: 3")
    raw = _report([hostile], envid="E\r\nX-Injected: 4")
    assert not re.search(rb"^X-Injected", raw, re.M)
    blocks = _status_blocks(_parse(raw))
    assert len(blocks) == 2
    assert blocks[1]["Diagnostic-Code"] == "smtp; 550 no X-Injected: 1 Final-Recipient: rfc822;evil@x"


def test_utf8_address_makes_a_global_report():
    raw = _report([_failed("élodie@hôpital.fr", orcpt=None)])
    report = _parse(raw)
    assert report.get_param("report-type") == "global-delivery-status"
    status = report.get_payload()[1]
    assert status.get_content_type() == "message/global-delivery-status"
    assert "Final-Recipient: utf-8;élodie@hôpital.fr" in raw.decode("utf-8")


def test_refuses_what_cannot_be_reported():
    with pytest.raises(ValueError, match="null sender"):
        build_report(reporting_mta=MTA, original_sender="", envid=None, ret=None, recipients=[_failed()],
                     original=ORIGINAL, arrival=NOW, now=NOW, from_address=DAEMON)
    with pytest.raises(ValueError, match="does not fit"):
        _report([_failed(status="2.0.0")])
    with pytest.raises(ValueError, match="does not fit"):
        _report([_failed(status="5.1")])
    with pytest.raises(ValueError, match="unknown DSN action"):
        _report([_failed(action="expanded")])
    with pytest.raises(ValueError, match="at least one"):
        _report([])
