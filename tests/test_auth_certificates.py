"""Client certificates to identities: email SAN, RPPS (UID, serialNumber, CN), structure id (OU)."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mssante_base.trust.tls import PeerTls
from mssante_operator.auth.certificates import (
    allows_client_auth,
    as_certificate,
    certificate_identity,
    rpps_from_national_id,
)
from mssante_operator.demo_kit import MAILBOXES, OPERATOR, _issue_mailbox
from mssante_operator.trust_space import dev_pki


@pytest.fixture(scope="module")
def ca() -> dev_pki.Authority:
    return dev_pki.make_ca("AC TEST IGC-SANTE", "TEST")


@pytest.fixture(scope="module")
def key():
    return dev_pki.make_key()


def personal_cert(ca, key, attributes, *, eku=(ExtendedKeyUsageOID.CLIENT_AUTH,)) -> x509.Certificate:
    """A certificate with an arbitrary subject (IGC-Santé personal certificates differ from dev_pki's)."""
    start = dev_pki.now() - dev_pki.BACKDATE
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dev_pki.DEFAULT_VALIDITY)
    )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    return builder.sign(ca.key, hashes.SHA256())


def test_rpps_from_national_id():
    assert rpps_from_national_id("810001234567") == "10001234567"
    assert rpps_from_national_id(" 810001234567 ") == "10001234567"
    assert rpps_from_national_id("10001234567") == "10001234567"
    assert rpps_from_national_id("10001234567", allow_bare=False) is None
    assert rpps_from_national_id("0751234567") is None  # ADELI-based IdNat_PS: no RPPS
    assert rpps_from_national_id("910001234567") is None
    assert rpps_from_national_id("8100012345678") is None
    assert rpps_from_national_id("abc") is None


def test_demo_kit_mailbox_certificate_maps_by_email_san(ca, key):
    per = next(entry for entry in MAILBOXES if entry.rpps)
    issued = _issue_mailbox(ca, per)
    identity = certificate_identity(issued.cert)
    assert identity.emails == (per.address,)
    assert identity.dn == issued.dn
    assert identity.dn.startswith(f"CN={per.address},OU={per.rpps},O={OPERATOR.org}")
    # The demo kit puts the RPPS in OU: read as a structure id, but the email SAN is what maps.
    assert identity.structure_id == per.rpps
    assert identity.rpps is None
    assert allows_client_auth(issued.cert)


def test_app_server_certificate_structure_id(ca, key):
    issued = dev_pki.issue(
        ca, cn="lab.h.fr", ou="130781234", org="HOPITAL", st="Rhône (69)", dns_names=("lab.h.fr",), key=key,
    )
    identity = certificate_identity(issued.cert)
    assert identity == certificate_identity(issued.cert.public_bytes(serialization.Encoding.DER))
    assert (identity.rpps, identity.structure_id, identity.emails) == (None, "130781234", ())


def test_emails_lowercased_and_deduplicated(ca, key):
    issued = dev_pki.issue(
        ca, cn="x", ou="1", org="O", st="S", emails=("Dr.Martin@H.fr", "dr.martin@h.fr", "other@h.fr"), key=key,
    )
    assert certificate_identity(issued.cert).emails == ("dr.martin@h.fr", "other@h.fr")


def test_rpps_from_uid_first(ca, key):
    cert = personal_cert(ca, key, [
        (NameOID.COUNTRY_NAME, "FR"),
        (NameOID.SERIAL_NUMBER, "899999999999"),
        (NameOID.USER_ID, "810001234567"),
        (NameOID.COMMON_NAME, "MARTIN CLAIRE"),
    ])
    assert certificate_identity(cert).rpps == "10001234567"


def test_rpps_from_serial_number_bare(ca, key):
    cert = personal_cert(ca, key, [(NameOID.SERIAL_NUMBER, "10009876543"), (NameOID.COMMON_NAME, "MOREAU INES")])
    assert certificate_identity(cert).rpps == "10009876543"


def test_rpps_from_uid_falls_back_to_serial_number_when_uid_is_not_an_rpps(ca, key):
    cert = personal_cert(ca, key, [(NameOID.USER_ID, "0751234567"), (NameOID.SERIAL_NUMBER, "810005550123")])
    assert certificate_identity(cert).rpps == "10005550123"


def test_rpps_from_cps_style_common_name(ca, key):
    cps = personal_cert(ca, key, [(NameOID.COMMON_NAME, "810001234567"), (NameOID.GIVEN_NAME, "CLAIRE")])
    assert certificate_identity(cps).rpps == "10001234567"
    bare = personal_cert(ca, key, [(NameOID.COMMON_NAME, "10001234567")])
    assert certificate_identity(bare).rpps is None


def test_peer_tls_and_missing_certificate(ca, key):
    issued = dev_pki.issue(ca, cn="x", ou="1", org="O", st="S", emails=("a@h.fr",), key=key)
    peer = PeerTls(version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384", certificate=issued.cert)
    assert certificate_identity(peer).emails == ("a@h.fr",)
    assert as_certificate(peer) is issued.cert
    empty = PeerTls(version="TLSv1.3", cipher="x", certificate=None)
    assert as_certificate(empty) is None
    with pytest.raises(ValueError, match="no client certificate"):
        certificate_identity(empty)


def test_allows_client_auth(ca, key):
    server_only = dev_pki.issue(ca, cn="s", ou="1", org="O", st="S", server=True, client=False, key=key)
    assert not allows_client_auth(server_only.cert)
    no_eku = personal_cert(ca, key, [(NameOID.COMMON_NAME, "x")], eku=None)
    assert allows_client_auth(no_eku)
    any_eku = personal_cert(ca, key, [(NameOID.COMMON_NAME, "x")], eku=(ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,))
    assert allows_client_auth(any_eku)
