"""A development PKI standing in for IGC-Santé: CAs, operator and mailbox certificates, CRLs, DKIM keys.

The real trust space only accepts certificates from IGC-Santé, which a developer cannot obtain for a
test machine. These helpers mint certificates with the same shape (RSA 2048, SHA-256, subject
``CN=<host>,OU=<id>,O=<org>,ST=<Dept (NN)>,C=FR``, serverAuth and clientAuth) so that the code paths
that check chains, CRLs and DNs run against realistic material. The demo kit and the tests use them.
Nothing here is meant for production: keys are written unencrypted.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519 as ed25519_keys
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KEY_SIZE = 2048
COUNTRY = "FR"
DEFAULT_VALIDITY = dt.timedelta(days=365)
CA_VALIDITY = dt.timedelta(days=3650)
# Backdating absorbs small clock differences between the machine that signs and the one that checks.
BACKDATE = dt.timedelta(hours=1)


@dataclass(frozen=True)
class Authority:
    """A certification authority: its self-signed certificate and the key that signs what it issues."""

    cert: x509.Certificate
    key: rsa.RSAPrivateKey


@dataclass(frozen=True)
class Issued:
    """An end-entity certificate, its key, and the CA certificate that completes its chain."""

    cert: x509.Certificate
    key: rsa.RSAPrivateKey
    ca_cert: x509.Certificate

    @property
    def chain(self) -> list[x509.Certificate]:
        """Leaf first, as a TLS server or client sends it."""
        return [self.cert, self.ca_cert]

    @property
    def dn(self) -> str:
        """The subject as the liste blanche writes it (``CN=…,OU=…,O=…,ST=…,C=FR``)."""
        return self.cert.subject.rfc4514_string()


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_key() -> rsa.RSAPrivateKey:
    """An RSA 2048 key, the size IGC-Santé issues."""
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)


def igc_subject(cn: str, ou: str, org: str, st: str | None = None) -> x509.Name:
    """A subject in the IGC-Santé pattern whose RFC 4514 text reads ``CN=…,OU=…,O=…,ST=…,C=FR``.

    RFC 4514 writes the most significant RDN last, so the RDN sequence is built from C down to CN.
    ``st`` is omitted for CAs, which carry no department.
    """
    attributes = [x509.NameAttribute(NameOID.COUNTRY_NAME, COUNTRY)]
    if st:
        attributes.append(x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, st))
    attributes += [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ]
    return x509.Name([x509.RelativeDistinguishedName([attr]) for attr in attributes])


def _validity(
    not_before: dt.datetime | None, not_after: dt.datetime | None, default: dt.timedelta
) -> tuple[dt.datetime, dt.datetime]:
    """Resolve the validity window; a ``not_after`` in the past yields an already-expired certificate."""
    start = not_before or now() - BACKDATE
    if not_after is None:
        return start, start + default
    if not_before is None and start >= not_after:
        start = not_after - DEFAULT_VALIDITY
    if start >= not_after:
        raise ValueError("not_before must precede not_after")
    return start, not_after


def make_ca(
    subject_cn: str,
    org: str,
    *,
    ou: str = "IGC-SANTE DEV",
    key: rsa.RSAPrivateKey | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> Authority:
    """A self-signed root CA (CA:true, keyCertSign + cRLSign, SKI/AKI), like an IGC-Santé AC."""
    key = key or make_key()
    name = igc_subject(subject_cn, ou, org)
    start, end = _validity(not_before, not_after, CA_VALIDITY)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(cert=cert, key=key)


def _subject_alt_name(
    dns_names: Iterable[str], ip_addresses: Iterable[str], emails: Iterable[str]
) -> x509.SubjectAlternativeName | None:
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    names += [x509.RFC822Name(email) for email in emails]
    return x509.SubjectAlternativeName(names) if names else None


def _leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=True,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )


def issue(
    ca: Authority,
    *,
    cn: str,
    ou: str,
    org: str,
    st: str,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    emails: Sequence[str] = (),
    server: bool = True,
    client: bool = True,
    key: rsa.RSAPrivateKey | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> Issued:
    """An end-entity certificate signed by ``ca``.

    Operators' IGC-Santé certificates serve both as TLS server and TLS client, hence both EKUs by
    default; a mailbox certificate passes ``server=False``. Pass a past ``not_after`` for an expired
    certificate, and ``key`` to reuse a key (tests that need many certificates quickly).
    """
    if not (server or client):
        raise ValueError("a certificate needs serverAuth, clientAuth or both")
    key = key or make_key()
    start, end = _validity(not_before, not_after, DEFAULT_VALIDITY)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(igc_subject(cn, ou, org, st))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
    )
    san = _subject_alt_name(dns_names, ip_addresses, emails)
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return Issued(cert=builder.sign(ca.key, hashes.SHA256()), key=key, ca_cert=ca.cert)


def make_crl(
    ca: Authority,
    revoked_serials: Iterable[int],
    *,
    last_update: dt.datetime | None = None,
    next_update: dt.datetime | None = None,
    crl_number: int = 1,
) -> x509.CertificateRevocationList:
    """A CRL signed by ``ca`` revoking ``revoked_serials`` (default next update: in 7 days)."""
    issued_at = last_update or now() - BACKDATE
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(issued_at)
        .next_update(next_update or issued_at + dt.timedelta(days=7))
        .add_extension(x509.CRLNumber(crl_number), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
    )
    for serial in revoked_serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(issued_at).build()
        )
    return builder.sign(ca.key, hashes.SHA256())


def key_pem(key: rsa.RSAPrivateKey | ed25519_keys.Ed25519PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM, which both ``ssl`` and ``cryptography`` load."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def certs_pem(certs: Iterable[x509.Certificate]) -> bytes:
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


def write_secret(path: Path, data: bytes) -> None:
    """Write a secret so that it is never readable by others, not even for an instant."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the file may have existed with wider permissions
        os.write(fd, data)
    finally:
        os.close(fd)


def write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    """Write a private key as PEM, mode 0600."""
    write_secret(path, key_pem(key))


def write_chain(path: Path, certs: Sequence[x509.Certificate]) -> None:
    """Write certificates as PEM in the given order (leaf first for a chain)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(certs_pem(certs))


def write_crl(path: Path, crl: x509.CertificateRevocationList) -> None:
    """Write a CRL as PEM."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))


def dkim_txt(public_key: rsa.RSAPublicKey) -> str:
    """The DNS TXT record publishing a DKIM key: ``v=DKIM1; k=rsa; p=<base64 SubjectPublicKeyInfo>``."""
    from .dkim import txt_record_for

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return txt_record_for(der)


def make_dkim_key(*, ed25519: bool = False) -> tuple[bytes, str]:
    """A DKIM RSA 2048 key: (private key PEM in PKCS#1, as DKIM tools expect; its TXT record).

    ``ed25519=True`` gives an RFC 8463 key instead: PKCS#8 PEM (the only PEM form for Ed25519) and a
    ``k=ed25519`` record whose ``p=`` is the raw 32-byte public key, as RFC 8463 section 4.2 requires.
    """
    if ed25519:
        ed_key = ed25519_keys.Ed25519PrivateKey.generate()
        raw_public = ed_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        txt = "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw_public).decode("ascii")
        return key_pem(ed_key), txt
    key = make_key()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return private_pem, dkim_txt(key.public_key())


def write_dkim_key(path: Path, private_pem: bytes) -> None:
    """Write a DKIM private key PEM, mode 0600."""
    write_secret(path, private_pem)
