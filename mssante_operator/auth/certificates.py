"""Who a TLS client certificate names: mailbox addresses, a professional's RPPS, a structure id.

The TLS layer has already verified the chain to the trust CA (IGC-Santé or the demo CA) and the
validity dates; this module only reads the subject and the subjectAltName, in order of strength:

1. ``emails``: rfc822Name entries of the subjectAltName. A CA vouches for them directly; the demo kit's
   mailbox certificates carry their address there (``CN=<address>``, SAN email = the address). The
   subject's emailAddress attribute is ignored: it is a legacy field CAs check less strictly.
2. ``rpps``: a professional's national identifier. IGC-Santé personal certificates carry the national
   PS identifier (IdNat_PS), which for an RPPS-registered professional is ``"8" + RPPS`` (11 digits).
   We look at the subject's ``UID`` (0.9.2342.19200300.100.1.1) first, then ``serialNumber``
   (2.5.4.5), accepting ``8<RPPS>`` or a bare ``<RPPS>``, and finally a CN that is exactly
   ``8<RPPS>`` (CPS card certificates name the holder by IdNat_PS in CN; a bare 11-digit CN is not
   taken, it could be anything).
3. ``structure_id``: the subject's OU, where IGC-Santé organisation/server certificates put the
   structure identifier (FINESS, SIRET…), as in ``CN=<host>,OU=<id>,O=<org>,ST=…,C=FR``. Note that the
   demo kit writes a PER mailbox certificate's RPPS in OU too; that is harmless because the email SAN
   (stronger) is used for those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mssante_base.trust.tls import PeerTls

_RPPS = re.compile(r"\d{11}")
# IdNat_PS = type prefix + identifier; "8" marks an RPPS number (ADELI ones start with "0").
_IDNAT_RPPS = re.compile(r"8(\d{11})")


@dataclass(frozen=True)
class CertificateIdentity:
    """What a client certificate says about its holder (see the module docstring for the order)."""

    rpps: str | None
    structure_id: str | None
    emails: tuple[str, ...]
    dn: str


def rpps_from_national_id(value: str, *, allow_bare: bool = True) -> str | None:
    """The RPPS in a national PS identifier: ``8`` + 11 digits (IdNat_PS), or 11 digits when ``allow_bare``.

    Anything else (an ADELI-based ``0…`` id, text, other lengths) gives None.
    """
    value = value.strip()
    match = _IDNAT_RPPS.fullmatch(value)
    if match:
        return match.group(1)
    if allow_bare and _RPPS.fullmatch(value):
        return value
    return None


def as_certificate(cert: PeerTls | x509.Certificate | bytes) -> x509.Certificate | None:
    """The certificate of a PeerTls (None when the client sent none), or DER bytes loaded."""
    if isinstance(cert, PeerTls):
        return cert.certificate
    if isinstance(cert, bytes | bytearray):
        return x509.load_der_x509_certificate(bytes(cert))
    return cert


def _attributes(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(attr.value).strip() for attr in name.get_attributes_for_oid(oid)]


def _emails(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    seen: list[str] = []
    for email in san.get_values_for_type(x509.RFC822Name):
        email = email.strip().lower()
        if email and "@" in email and email not in seen:
            seen.append(email)
    return tuple(seen)


def _rpps(subject: x509.Name) -> str | None:
    for oid in (NameOID.USER_ID, NameOID.SERIAL_NUMBER):
        for value in _attributes(subject, oid):
            rpps = rpps_from_national_id(value)
            if rpps:
                return rpps
    for value in _attributes(subject, NameOID.COMMON_NAME):
        rpps = rpps_from_national_id(value, allow_bare=False)
        if rpps:
            return rpps
    return None


def certificate_identity(cert: PeerTls | x509.Certificate | bytes) -> CertificateIdentity:
    """Read the identities of a client certificate; raises ValueError when there is no certificate."""
    certificate = as_certificate(cert)
    if certificate is None:
        raise ValueError("no client certificate")
    subject = certificate.subject
    units = [value for value in _attributes(subject, NameOID.ORGANIZATIONAL_UNIT_NAME) if value]
    return CertificateIdentity(
        rpps=_rpps(subject),
        structure_id=units[0] if units else None,
        emails=_emails(certificate),
        dn=subject.rfc4514_string(),
    )


def allows_client_auth(cert: x509.Certificate) -> bool:
    """False when the certificate restricts its use (extendedKeyUsage) and clientAuth is not among them.

    A server-only certificate must not open a mailbox, even if some TLS stack let it through.
    """
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return ExtendedKeyUsageOID.CLIENT_AUTH in usages or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usages
