"""The MTA's inbound policy as pure functions: each check, its accepted case and its exact refusal."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mssante_base.annuaire import BalKind, MailboxEntry
from mssante_base.errors import Refusal
from mssante_base.smtp import guards
from mssante_base.trust.tls import PeerTls
from mssante_operator.smtp import policy
from mssante_operator.trust_space import dev_pki
from mssante_operator.trust_space.dkim import DkimResult
from mssante_operator.trust_space.liste_blanche import ListedDomain, parse_liste_blanche, render_liste_blanche

LABO = "labo-biolab.mssante.fr"
HOSPITAL = "hopital-demo.mssante.fr"


@pytest.fixture(scope="module")
def ca() -> dev_pki.Authority:
    return dev_pki.make_ca("AC TEST IGC-SANTE", "ESPACE DE CONFIANCE TEST")


@pytest.fixture(scope="module")
def labo_peer(ca) -> PeerTls:
    issued = dev_pki.issue(ca, cn=f"smtp.{LABO}", ou="38012345600017", org="LABORATOIRE BIOLAB", st="Rhône (69)")
    return PeerTls(version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384", certificate=issued.cert)


@pytest.fixture(scope="module")
def stranger_peer(ca) -> PeerTls:
    issued = dev_pki.issue(ca, cn="smtp.autre.fr", ou="1", org="AUTRE", st="Paris (75)", key=dev_pki.make_key())
    return PeerTls(version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384", certificate=issued.cert)


@pytest.fixture(scope="module")
def liste(labo_peer):
    entries = [
        ListedDomain(name=LABO, dn_text=labo_peer.dn_text),
        ListedDomain(name=LABO, dn_text=f"CN=smtp2.{LABO},OU=38012345600017,O=LABORATOIRE BIOLAB,ST=Rhône (69),C=FR"),
        ListedDomain(name="ehpad.mssante.fr", dn_text="CN=smtp.ehpad.mssante.fr,O=EHPAD,C=FR"),
    ]
    return parse_liste_blanche(render_liste_blanche(entries, datetime.now(UTC)))


def _codes(refusal: Refusal | None) -> tuple[int, str] | None:
    return None if refusal is None else (refusal.code, refusal.enhanced)


# --- addresses ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "domain"),
    [("a@Labo-Biolab.MSSante.fr", LABO), ("a@b@labo.fr.", "labo.fr"), ("postmaster", ""), ("", "")],
)
def test_address_domain_is_lower_cased_and_may_be_empty(address, domain):
    assert policy.address_domain(address) == domain


# --- connection: TLS and certificate ---------------------------------------------------------------


def test_plain_connection_is_refused_530(labo_peer):
    assert policy.check_peer_certificate(None, revoked=False) is policy.TLS_REQUIRED
    assert _codes(policy.TLS_REQUIRED) == (530, "5.7.0")


def test_tls_without_client_certificate_is_refused_530():
    refusal = policy.check_peer_certificate(PeerTls("TLSv1.3", "x", None), revoked=False)
    assert _codes(refusal) == (530, "5.7.0")
    assert "certificate" in refusal.text


def test_revoked_certificate_is_refused_550(labo_peer):
    refusal = policy.check_peer_certificate(labo_peer, revoked=True)
    assert _codes(refusal) == (550, "5.7.1")
    assert "revoked" in refusal.text


def test_valid_certificate_is_accepted(labo_peer):
    assert policy.check_peer_certificate(labo_peer, revoked=False) is None


# --- MAIL FROM: liste blanche and DN -----------------------------------------------------------------


def test_listed_domain_with_its_listed_dn_is_accepted(labo_peer, liste):
    assert policy.check_sender_domain(LABO, labo_peer, liste) is None


def test_sender_domain_not_listed_is_refused_550_5_7_1(labo_peer, liste):
    refusal = policy.check_sender_domain("operateur-pirate.fr", labo_peer, liste)
    assert _codes(refusal) == (550, "5.7.1")
    assert "operateur-pirate.fr is not in the MSSanté trust space" in refusal.text


def test_sub_domain_of_a_listed_domain_is_not_listed(labo_peer, liste):
    assert _codes(policy.check_sender_domain(f"x.{LABO}", labo_peer, liste)) == (550, "5.7.1")


def test_certificate_dn_listed_for_another_domain_is_refused(labo_peer, liste):
    refusal = policy.check_sender_domain("ehpad.mssante.fr", labo_peer, liste)
    assert _codes(refusal) == (550, "5.7.1")
    assert f"Certificate DN {labo_peer.dn_text} is not registered for domain ehpad.mssante.fr" in refusal.text


def test_certificate_dn_not_in_the_liste_is_refused(stranger_peer, liste):
    refusal = policy.check_sender_domain(LABO, stranger_peer, liste)
    assert _codes(refusal) == (550, "5.7.1")
    assert f"not registered for domain {LABO}" in refusal.text


def test_sender_without_domain_is_refused_553_5_1_7(labo_peer, liste):
    assert _codes(policy.check_sender_domain("", labo_peer, liste)) == (553, "5.1.7")


# --- RCPT TO ----------------------------------------------------------------------------------------


def test_recipient_of_a_hosted_domain_is_accepted():
    assert policy.check_recipient_domain(HOSPITAL, [HOSPITAL.upper(), "autre.mssante.fr"]) is None


def test_recipient_of_another_domain_is_relaying_denied():
    refusal = policy.check_recipient_domain(LABO, [HOSPITAL])
    assert _codes(refusal) == (550, "5.7.1")
    assert refusal.text.startswith("Relaying denied")


def test_unknown_recipient_is_refused_550_5_1_1():
    refusal = policy.check_recipient_entry(f"nobody@{HOSPITAL}", None)
    assert _codes(refusal) == (550, "5.1.1")


def test_applicative_mailbox_is_refused_550_5_7_1():
    entry = MailboxEntry(address=f"labo-auto@{HOSPITAL}", kind=BalKind.APP)
    refusal = policy.check_recipient_entry(entry.address, entry)
    assert _codes(refusal) == (550, "5.7.1")
    assert "applicative mailbox cannot receive mail" in refusal.text


@pytest.mark.parametrize("kind", [BalKind.PER, BalKind.ORG, BalKind.CAB])
def test_personal_and_organisational_mailboxes_receive(kind):
    entry = MailboxEntry(address=f"x@{HOSPITAL}", kind=kind)
    assert policy.check_recipient_entry(entry.address, entry) is None


def test_recipients_up_to_the_limit_are_accepted():
    assert policy.check_recipient_count(already=2, maximum=3) is None


def test_recipient_over_the_limit_is_refused_452_4_5_3():
    refusal = policy.check_recipient_count(already=3, maximum=3)
    assert _codes(refusal) == (452, "4.5.3")
    assert refusal.temporary


# --- DATA: line endings -------------------------------------------------------------------------------


def test_crlf_only_data_is_accepted():
    assert guards.check_line_endings(b"Subject: x\r\n\r\nline\r\n\r\n") is None


@pytest.mark.parametrize(
    "data",
    [b"a\nb\r\n", b"a\rb\r\n", b"a\r\n\n.\n\r\n", b"a\r\n\r.\r\r\n", b"a\r\r\n", b"end\n"],
    ids=["bare-lf", "bare-cr", "lf-dot-lf", "cr-dot-cr", "cr-before-crlf", "trailing-lf"],
)
def test_bare_cr_or_lf_is_refused_550_5_6_0(data):
    assert _codes(guards.check_line_endings(data)) == (550, "5.6.0")


# --- DATA: From header --------------------------------------------------------------------------------


def test_from_domains_reads_every_address():
    assert policy.from_domains(["Labo <a@Labo.fr>, b@autre.fr", "c@x.fr"]) == ["labo.fr", "autre.fr", "x.fr"]


def test_from_of_the_peer_domain_is_accepted(labo_peer, liste):
    assert policy.check_from_header([LABO], labo_peer, liste) is None


@pytest.mark.parametrize("domains", [[], [LABO, LABO], [""]], ids=["none", "two", "no-domain"])
def test_from_header_must_hold_exactly_one_address_with_a_domain(labo_peer, liste, domains):
    assert _codes(policy.check_from_header(domains, labo_peer, liste)) == (550, "5.6.0")


def test_from_of_a_domain_the_peer_may_not_send_for_is_refused(labo_peer, liste):
    refusal = policy.check_from_header(["ehpad.mssante.fr"], labo_peer, liste)
    assert _codes(refusal) == (550, "5.7.1")
    assert refusal.text.startswith("From header: ")


# --- DATA: DKIM -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signing", "from_domain", "aligned"),
    [
        (LABO, LABO, True),
        ("mssante.fr", LABO, True),
        (LABO.upper() + ".", LABO, True),
        ("clinique-ouest.mssante.fr", LABO, False),
        (f"x.{LABO}", LABO, False),
        ("biolab.mssante.fr", LABO, False),
        ("", LABO, False),
    ],
    ids=["same", "parent", "case-and-dot", "sibling", "child", "suffix-not-parent", "empty"],
)
def test_dkim_alignment_is_relaxed_to_parent_domains(signing, from_domain, aligned):
    assert policy.dkim_aligned(signing, from_domain) is aligned


def _dkim(result: str, domain: str = LABO, reason: str = "") -> DkimResult:
    return DkimResult(result, domain, "mss2026", "abcdefgh", reason)  # type: ignore[arg-type]


def test_one_aligned_pass_is_enough():
    assert policy.check_dkim([_dkim("fail"), _dkim("pass", "mssante.fr")], LABO) is None


def test_unsigned_message_is_refused_550_5_7_20():
    refusal = policy.check_dkim([], LABO)
    assert _codes(refusal) == (550, "5.7.20")
    assert "No DKIM signature" in refusal.text


def test_only_unaligned_signatures_are_refused_550_5_7_20():
    refusal = policy.check_dkim([_dkim("pass", "clinique-ouest.mssante.fr")], LABO)
    assert _codes(refusal) == (550, "5.7.20")
    assert LABO in refusal.text


def test_invalid_aligned_signature_is_refused_550_5_7_20_with_its_reason():
    refusal = policy.check_dkim([_dkim("fail", reason="body hash did not verify")], LABO)
    assert _codes(refusal) == (550, "5.7.20")
    assert "body hash did not verify" in refusal.text


def test_aligned_key_lookup_failure_is_temporary_451_4_7_5():
    refusal = policy.check_dkim([_dkim("permerror"), _dkim("temperror")], LABO)
    assert _codes(refusal) == (451, "4.7.5")
    assert refusal.temporary


def test_unaligned_key_lookup_failure_is_not_a_reason_to_retry():
    refusal = policy.check_dkim([_dkim("temperror", "clinique-ouest.mssante.fr")], LABO)
    assert _codes(refusal) == (550, "5.7.20")


def test_refusal_reply_line_carries_code_enhanced_code_and_text():
    refusal = Refusal(550, "5.7.20", "No DKIM signature")
    assert refusal.reply == "550 5.7.20 No DKIM signature"
    assert not refusal.temporary


def test_refusal_with_mismatched_classes_is_a_programming_error():
    with pytest.raises(ValueError):
        Refusal(550, "4.7.1", "mismatch")
    with pytest.raises(ValueError):
        Refusal(250, "2.0.0", "not a refusal")


# --- envelope syntax ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["<a\x00b@labo.fr>", "<a@labo\x7f.fr>", "<a\x85@labo.fr>", "<a@labo.fr> SIZE=1\x1b"])
def test_control_characters_are_refused_by_command(text):
    assert guards.check_envelope_text(text, recipient=False).reply.startswith("501 5.1.7 Bad sender address syntax")
    assert guards.check_envelope_text(text, recipient=True).reply.startswith("553 5.1.3 Bad recipient address syntax")


def test_invalid_utf8_is_refused_and_never_quoted():
    text = b"<h\xe9l\xe8ne@labo.fr>".decode("utf-8", "surrogateescape")  # as aiosmtpd decodes it
    refusal = guards.check_envelope_text(text, recipient=True)
    assert refusal == Refusal(553, "5.1.3", "Bad recipient address syntax: the address is not valid UTF-8")


@pytest.mark.parametrize("text", ["<a@labo.fr>", "<hélène@labo.fr> SMTPUTF8", "<>", ""])
def test_printable_envelope_text_passes(text):
    assert guards.check_envelope_text(text, recipient=False) is None


def test_non_ascii_address_needs_smtputf8():
    assert guards.check_smtputf8("hélène@labo.fr", recipient=False, smtputf8=True) is None
    assert guards.check_smtputf8("helene@labo.fr", recipient=True, smtputf8=False) is None
    refusal = guards.check_smtputf8("hélène@labo.fr", recipient=True, smtputf8=False)
    assert refusal is not None and refusal.reply.startswith("553 5.6.7 Non-ASCII recipient address")
