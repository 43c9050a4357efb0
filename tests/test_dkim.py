"""DKIM verification: one result per signature in RFC 8601 words, and the alignment the policy asks for."""

from __future__ import annotations

import pytest
from support.harness import lab_report

from mssante_operator.smtp.policy import check_dkim
from mssante_operator.trust_space import dev_pki
from mssante_operator.trust_space.dkim import (
    DnsKeys,
    KeyLookupError,
    StaticKeys,
    sign_message,
    txt_record_for,
    verify_message,
)

LABO = "labo-biolab.mssante.fr"
PARENT = "mssante.fr"
SIBLING = "clinique-ouest.mssante.fr"
SELECTOR = "mss2026"


@pytest.fixture(scope="module")
def keys() -> dict[str, tuple[bytes, str]]:
    """A DKIM key (private PEM, TXT record) per domain."""
    return {domain: dev_pki.make_dkim_key() for domain in (LABO, PARENT, SIBLING)}


@pytest.fixture(scope="module")
def published(keys) -> StaticKeys:
    return StaticKeys({f"{SELECTOR}._domainkey.{domain}": txt for domain, (_, txt) in keys.items()})


@pytest.fixture(scope="module")
def report() -> bytes:
    return lab_report(f"resultats@{LABO}", ["dr.martin@hopital-demo.mssante.fr"], message_id="<cr-1@labo>")


def _signed(keys, message: bytes, domain: str = LABO) -> bytes:
    return sign_message(message, domain=domain, selector=SELECTOR, private_key_pem=keys[domain][0]) + message


class FailingDns:
    """A key source whose DNS lookups time out."""

    def txt(self, name: str) -> bytes | None:
        raise KeyLookupError(f"DNS lookup of {name} failed: Timeout")


def test_valid_signature_passes(keys, published, report):
    [result] = verify_message(_signed(keys, report), published)
    assert result.result == "pass"
    assert (result.domain, result.selector) == (LABO, SELECTOR)
    assert len(result.b_prefix) == 8


def test_unsigned_message_has_no_result(published, report):
    assert verify_message(report, published) == []


def test_modified_signed_header_fails(keys, published, report):
    tampered = _signed(keys, report).replace(b"Message-ID: <cr-1@labo>", b"Message-ID: <cr-2@labo>")
    [result] = verify_message(tampered, published)
    assert result.result == "fail"


def test_modified_body_fails(keys, published, report):
    tampered = _signed(keys, report).replace(b"Cordialement", b"Cordialement, un intrus")
    [result] = verify_message(tampered, published)
    assert result.result == "fail"
    assert "body hash" in result.reason


def test_signature_made_with_another_key_fails(keys, report):
    other_keys = StaticKeys({f"{SELECTOR}._domainkey.{LABO}": keys[SIBLING][1]})
    [result] = verify_message(_signed(keys, report), other_keys)
    assert result.result == "fail"


def test_missing_public_key_is_a_permanent_error(keys, report):
    [result] = verify_message(_signed(keys, report), StaticKeys({}))
    assert result.result == "permerror"
    assert f"{SELECTOR}._domainkey.{LABO}" in result.reason


def test_unusable_public_key_record_is_a_permanent_error(keys, report):
    [result] = verify_message(_signed(keys, report), StaticKeys({f"{SELECTOR}._domainkey.{LABO}": "v=DKIM1; p="}))
    assert result.result in {"permerror", "fail"}
    assert result.result != "pass"


def test_key_lookup_failure_is_a_temporary_error(keys, report):
    [result] = verify_message(_signed(keys, report), FailingDns())
    assert result.result == "temperror"
    assert "Timeout" in result.reason


def test_malformed_signature_header_is_a_permanent_error(published, report):
    [result] = verify_message(b"DKIM-Signature: v=1; a=rsa-sha256; d=x.fr; s=s; bh=abc; b=def\r\n" + report, published)
    assert result.result == "permerror"


def test_each_signature_gets_its_own_result(keys, published, report):
    good = _signed(keys, report)
    message = _signed(keys, good, domain=SIBLING)
    forged = message.replace(b"d=" + SIBLING.encode(), b"d=" + PARENT.encode(), 1)
    results = verify_message(forged, published)
    assert [(r.domain, r.result) for r in results] == [(PARENT, "fail"), (LABO, "pass")]


def test_txt_record_publishes_the_key():
    from cryptography.hazmat.primitives import serialization

    public = dev_pki.make_key().public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert txt_record_for(der) == dev_pki.dkim_txt(public)


# --- relaxed alignment with the From domain (what check_dkim applies to these results) ---------------


def test_signature_of_the_from_domain_is_accepted(keys, published, report):
    assert check_dkim(verify_message(_signed(keys, report), published), LABO) is None


def test_signature_of_a_parent_domain_is_accepted(keys, published, report):
    results = verify_message(_signed(keys, report, domain=PARENT), published)
    assert results[0].result == "pass"
    assert check_dkim(results, LABO) is None


def test_valid_signature_of_a_sibling_domain_is_refused(keys, published, report):
    results = verify_message(_signed(keys, report, domain=SIBLING), published)
    assert results[0].result == "pass"
    refusal = check_dkim(results, LABO)
    assert refusal is not None
    assert (refusal.code, refusal.enhanced) == (550, "5.7.20")


def test_key_lookup_failure_is_answered_451_4_7_5(keys, report):
    refusal = check_dkim(verify_message(_signed(keys, report), FailingDns()), LABO)
    assert refusal is not None
    assert (refusal.code, refusal.enhanced) == (451, "4.7.5")


def test_invalid_signature_is_answered_550_5_7_20(keys, published, report):
    tampered = _signed(keys, report).replace(b"Cordialement", b"Salutations")
    refusal = check_dkim(verify_message(tampered, published), LABO)
    assert refusal is not None
    assert (refusal.code, refusal.enhanced) == (550, "5.7.20")


# --- messages dkimpy cannot read: a permanent failure of the message, never an exception ---------------


@pytest.mark.parametrize(
    "prefix",
    [b"a header line without a colon\r\n", b" a continuation line first\r\n"],
    ids=["no-colon", "leading-continuation"],
)
def test_unreadable_header_block_is_a_permanent_error(keys, published, report, prefix):
    [result] = verify_message(prefix + _signed(keys, report), published)
    assert result.result == "permerror"
    assert check_dkim([result], LABO) is not None


def test_eight_bit_junk_in_the_selector_is_a_permanent_error(published, report):
    signature = b"DKIM-Signature: v=1; a=rsa-sha256; d=labo.fr; s=s\xc3\xff; h=from; bh=AAAA; b=AAAA\r\n"
    [result] = verify_message(signature + report, published)
    assert result.result == "permerror"


@pytest.mark.parametrize(
    "name",
    ["..._domainkey.labo.fr", "a" * 70 + "._domainkey.labo.fr", "s._domainkey." + "a" * 60 + ".b" * 100, "\\"],
    ids=["empty-label", "long-label", "long-name", "bad-escape"],
)
def test_dns_name_that_cannot_exist_has_no_key(name):
    assert DnsKeys(timeout=1).txt(name) is None
