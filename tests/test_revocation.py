"""Revocation lists: only CRLs signed by a trust CA count, and they revoke by (issuer, serial)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from mssante_base.trust.revocation import RevocationError, RevocationLists, load_certificates
from mssante_operator.trust_space import dev_pki


@pytest.fixture(scope="module")
def trust_ca() -> dev_pki.Authority:
    return dev_pki.make_ca("AC TEST IGC-SANTE", "ESPACE DE CONFIANCE TEST")


@pytest.fixture(scope="module")
def other_ca() -> dev_pki.Authority:
    return dev_pki.make_ca("AC PIRATE", "HORS ESPACE")


@pytest.fixture(scope="module")
def key():
    return dev_pki.make_key()


def _issue(ca: dev_pki.Authority, key, cn: str = "smtp.op.mssante.fr") -> dev_pki.Issued:
    return dev_pki.issue(ca, cn=cn, ou="1234", org="OP", st="Rhône (69)", key=key)


def _crl_file(tmp_path: Path, ca: dev_pki.Authority, serials: list[int], name: str = "ca.crl.pem", **kw) -> Path:
    path = tmp_path / name
    dev_pki.write_crl(path, dev_pki.make_crl(ca, serials, **kw))
    return path


def test_certificate_listed_in_the_crl_is_revoked(tmp_path, trust_ca, key):
    revoked, good = _issue(trust_ca, key), _issue(trust_ca, key)
    lists = RevocationLists.load([_crl_file(tmp_path, trust_ca, [revoked.cert.serial_number])], [trust_ca.cert])
    assert lists.is_revoked(revoked.cert)
    assert not lists.is_revoked(good.cert)


def test_same_serial_from_another_issuer_is_not_revoked(tmp_path, trust_ca, other_ca, key):
    revoked = _issue(trust_ca, key)
    lists = RevocationLists.load([_crl_file(tmp_path, trust_ca, [revoked.cert.serial_number])], [trust_ca.cert])
    lookalike = dev_pki.issue(other_ca, cn="x", ou="1", org="X", st="Paris (75)", key=key)
    assert not lists.is_revoked(lookalike.cert)


def test_der_encoded_crl_is_read(tmp_path, trust_ca, key):
    revoked = _issue(trust_ca, key)
    path = tmp_path / "ca.crl"
    path.write_bytes(dev_pki.make_crl(trust_ca, [revoked.cert.serial_number]).public_bytes(serialization.Encoding.DER))
    assert RevocationLists.load([path], [trust_ca.cert]).is_revoked(revoked.cert)


def test_crl_signed_by_another_ca_is_refused(tmp_path, trust_ca, other_ca):
    path = _crl_file(tmp_path, other_ca, [])
    with pytest.raises(RevocationError, match="not a trust CA") as caught:
        RevocationLists.load([path], [trust_ca.cert])
    assert str(path) in str(caught.value)


def test_crl_naming_a_trust_ca_but_signed_with_another_key_is_refused(tmp_path, trust_ca):
    impostor = dev_pki.Authority(cert=trust_ca.cert, key=dev_pki.make_key())
    path = _crl_file(tmp_path, impostor, [])
    with pytest.raises(RevocationError, match="signature does not verify"):
        RevocationLists.load([path], [trust_ca.cert])


def test_unreadable_crl_file_is_refused_with_its_name(tmp_path, trust_ca):
    path = tmp_path / "broken.crl.pem"
    path.write_bytes(b"-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n")
    with pytest.raises(RevocationError, match=r"broken\.crl\.pem: cannot read CRL"):
        RevocationLists.load([path], [trust_ca.cert])


def test_missing_crl_file_is_refused(tmp_path, trust_ca):
    with pytest.raises(RevocationError, match="cannot read CRL"):
        RevocationLists.load([tmp_path / "absent.crl.pem"], [trust_ca.cert])


def test_crl_past_its_next_update_is_reported_stale_but_still_applied(tmp_path, trust_ca, key):
    revoked = _issue(trust_ca, key)
    long_ago = dev_pki.now() - dt.timedelta(days=30)
    path = _crl_file(tmp_path, trust_ca, [revoked.cert.serial_number], last_update=long_ago,
                     next_update=long_ago + dt.timedelta(days=7))
    lists = RevocationLists.load([path], [trust_ca.cert])
    assert lists.stale_issuers() == [trust_ca.cert.subject.rfc4514_string()]
    assert lists.is_revoked(revoked.cert)


def test_fresh_crl_is_not_stale(tmp_path, trust_ca):
    assert RevocationLists.load([_crl_file(tmp_path, trust_ca, [])], [trust_ca.cert]).stale_issuers() == []


def test_ca_bundle_holds_every_certificate(tmp_path, trust_ca, other_ca):
    bundle = tmp_path / "bundle.pem"
    dev_pki.write_chain(bundle, [trust_ca.cert, other_ca.cert])
    assert load_certificates(bundle) == [trust_ca.cert, other_ca.cert]


def test_unreadable_ca_bundle_is_refused(tmp_path):
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("no certificate here")
    with pytest.raises(RevocationError, match="cannot read certificates"):
        load_certificates(bundle)
