"""The development PKI: certificates shaped like IGC-Santé's, verifiable chains, CRLs, DKIM keys."""

from __future__ import annotations

import base64
import datetime as dt
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from mssante_base.trust.dn import name_to_dn, parse_dn
from mssante_operator.trust_space import dev_pki


@pytest.fixture(scope="module")
def ca() -> dev_pki.Authority:
    return dev_pki.make_ca("AC TEST IGC-SANTE", "ESPACE DE CONFIANCE TEST")


@pytest.fixture(scope="module")
def server(ca) -> dev_pki.Issued:
    return dev_pki.issue(
        ca, cn="smtp.op.mssante.fr", ou="1130781234", org="OPERATEUR TEST", st="Bouches-du-Rhône (13)",
        dns_names=("smtp.op.mssante.fr",), ip_addresses=("127.0.0.1",),
    )


def _eku(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def _store(ca: dev_pki.Authority) -> verification.Store:
    return verification.Store([ca.cert])


def test_subject_reads_in_igc_sante_order(server):
    assert server.dn == "CN=smtp.op.mssante.fr,OU=1130781234,O=OPERATEUR TEST,ST=Bouches-du-Rhône (13),C=FR"
    assert server.dn == server.cert.subject.rfc4514_string()
    assert parse_dn(server.dn) == name_to_dn(server.cert.subject)


def test_ca_is_a_ca(ca):
    basic = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints)
    usage = ca.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert basic.critical and basic.value.ca
    assert usage.key_cert_sign and usage.crl_sign
    ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = ca.cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert ca.key.key_size == 2048


def test_server_certificate_verifies_as_server_and_client(ca, server):
    ca.cert.public_key().verify(
        server.cert.signature, server.cert.tbs_certificate_bytes,
        padding.PKCS1v15(),
        server.cert.signature_hash_algorithm,
    )
    builder = verification.PolicyBuilder().store(_store(ca))
    chain = builder.build_server_verifier(x509.DNSName("smtp.op.mssante.fr")).verify(server.cert, [])
    assert chain[-1] == ca.cert
    assert builder.build_client_verifier().verify(server.cert, []).chain[0] == server.cert
    assert _eku(server.cert) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert server.chain == [server.cert, ca.cert]


def test_client_only_certificate(ca):
    mailbox = dev_pki.issue(
        ca, cn="dr.x@op.mssante.fr", ou="10001234567", org="OPERATEUR TEST", st="Paris (75)",
        emails=("dr.x@op.mssante.fr",), server=False,
    )
    assert _eku(mailbox.cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    verified = verification.PolicyBuilder().store(_store(ca)).build_client_verifier().verify(mailbox.cert, [])
    assert verified.subjects == [x509.RFC822Name("dr.x@op.mssante.fr")]
    with pytest.raises(ValueError):
        dev_pki.issue(ca, cn="x", ou="1", org="o", st="s", server=False, client=False)


def test_other_ca_does_not_verify(server):
    other = dev_pki.make_ca("AC PIRATE", "PIRATE")
    verifier = verification.PolicyBuilder().store(_store(other)).build_client_verifier()
    with pytest.raises(verification.VerificationError):
        verifier.verify(server.cert, [])


def test_expired_certificate(ca):
    yesterday = dev_pki.now() - dt.timedelta(days=1)
    expired = dev_pki.issue(
        ca, cn="old.op.mssante.fr", ou="1", org="O", st="Paris (75)", dns_names=("old.op.mssante.fr",),
        not_after=yesterday,
    )
    assert expired.cert.not_valid_after_utc < dev_pki.now()
    assert expired.cert.not_valid_before_utc < expired.cert.not_valid_after_utc
    verifier = verification.PolicyBuilder().store(_store(ca)).build_client_verifier()
    with pytest.raises(verification.VerificationError):
        verifier.verify(expired.cert, [])


def test_crl_lists_serial_and_is_signed_by_ca(ca, server):
    crl = dev_pki.make_crl(ca, [server.cert.serial_number])
    assert crl.get_revoked_certificate_by_serial_number(server.cert.serial_number) is not None
    assert crl.issuer == ca.cert.subject
    assert crl.is_signature_valid(ca.cert.public_key())
    assert crl.next_update_utc > dev_pki.now()
    assert not crl.is_signature_valid(dev_pki.make_ca("AC PIRATE", "PIRATE").cert.public_key())


def test_writers(tmp_path, ca, server):
    key_path, chain_path, crl_path = tmp_path / "k.key", tmp_path / "sub" / "c.pem", tmp_path / "c.crl.pem"
    dev_pki.write_key(key_path, server.key)
    dev_pki.write_chain(chain_path, server.chain)
    dev_pki.write_crl(crl_path, dev_pki.make_crl(ca, []))
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    loaded = serialization.load_pem_private_key(key_path.read_bytes(), None)
    assert loaded.public_key().public_numbers() == server.key.public_key().public_numbers()
    assert x509.load_pem_x509_certificates(chain_path.read_bytes()) == [server.cert, ca.cert]
    assert x509.load_pem_x509_crl(crl_path.read_bytes()).issuer == ca.cert.subject


def test_dkim_key_and_txt_record():
    private_pem, txt = dev_pki.make_dkim_key()
    assert private_pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert txt.startswith("v=DKIM1; k=rsa; p=")
    public = serialization.load_der_public_key(base64.b64decode(txt.split("p=", 1)[1]))
    private = serialization.load_pem_private_key(private_pem, None)
    assert public.public_numbers() == private.public_key().public_numbers()
