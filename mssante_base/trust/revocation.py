"""Certificate revocation lists of the trust space, checked for every peer certificate.

CRLs are parsed with ``cryptography`` and their signature checked against the CA bundle, so a CRL
file that was tampered with or belongs to another CA is refused instead of silently trusted.
Revocation is checked here rather than inside OpenSSL so that a revoked peer gets a precise SMTP
reply, and so that a reloaded CRL applies to the next connection without rebuilding TLS contexts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

log = logging.getLogger(__name__)


class RevocationError(ValueError):
    """A CRL file is unreadable, or not signed by a CA of the trust bundle."""


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle."""
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise RevocationError(f"{path}: cannot read certificates: {exc}") from exc


def parse_crl(data: bytes) -> x509.CertificateRevocationList:
    """A CRL in PEM or DER; raises ValueError when it is neither."""
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)


def verify_crl(crl: x509.CertificateRevocationList, authorities: Iterable[x509.Certificate]) -> x509.Certificate:
    """The trust CA that signed ``crl``; raises RevocationError when none of ``authorities`` did."""
    issuer = next((ca for ca in authorities if ca.subject == crl.issuer), None)
    if issuer is None:
        raise RevocationError(f"CRL issuer {crl.issuer.rfc4514_string()} is not a trust CA")
    if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
        raise RevocationError("CRL signature does not verify with its issuer's key")
    return issuer


def read_crl(path: Path, authorities: Iterable[x509.Certificate]) -> x509.CertificateRevocationList:
    """The CRL of a file, its signature checked; raises RevocationError naming the file at fault."""
    try:
        crl = parse_crl(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise RevocationError(f"{path}: cannot read CRL: {exc}") from exc
    try:
        verify_crl(crl, authorities)
    except RevocationError as exc:
        raise RevocationError(f"{path}: {exc}") from exc
    return crl


@dataclass(frozen=True)
class RevocationLists:
    """Revoked serial numbers per issuer name, from CRLs whose signatures were checked."""

    revoked: dict[x509.Name, frozenset[int]]
    next_updates: dict[x509.Name, datetime | None]

    @classmethod
    def load(cls, crl_files: Iterable[Path], authorities: list[x509.Certificate]) -> RevocationLists:
        """Read and verify CRL files; raises RevocationError naming the file at fault."""
        revoked: dict[x509.Name, set[int]] = {}
        next_updates: dict[x509.Name, datetime | None] = {}
        for path in crl_files:
            crl = read_crl(path, authorities)
            revoked.setdefault(crl.issuer, set()).update(item.serial_number for item in crl)
            next_updates[crl.issuer] = crl.next_update_utc
        return cls(
            revoked={name: frozenset(serials) for name, serials in revoked.items()},
            next_updates=next_updates,
        )

    def is_revoked(self, certificate: x509.Certificate) -> bool:
        return certificate.serial_number in self.revoked.get(certificate.issuer, frozenset())

    def stale_issuers(self, now: datetime | None = None) -> list[str]:
        """Issuers whose CRL is past its nextUpdate: worth a warning, the list is still applied."""
        now = now or datetime.now(UTC)
        return [
            name.rfc4514_string()
            for name, next_update in self.next_updates.items()
            if next_update is not None and next_update < now
        ]
