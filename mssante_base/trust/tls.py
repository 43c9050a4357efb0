"""TLS contexts of the trust space and the identity of a connected peer.

Every context refuses anything older than TLS 1.2, and offers TLS 1.2 only its AEAD suites with
forward secrecy (ECDHE with AES-GCM or ChaCha20-Poly1305; ANSSI and RFC 9325): the CBC suites that
OpenSSL's default list still holds (``ECDHE-RSA-AES256-SHA384`` ...) are gone. TLS 1.3 suites are
all AEAD. The server context *asks* for a client
certificate (CERT_OPTIONAL) and has OpenSSL verify the chain to the trust CA and its validity
dates: a certificate from another CA or an expired one fails the handshake with the matching TLS
alert ("unknown ca", "certificate expired"). A client that sends no certificate completes the
handshake and is refused at the SMTP level with a sentence saying a certificate is required, which
is far easier for a peer's administrator to diagnose than a bare handshake failure.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from mssante_base.trust.dn import NormalDn, name_to_dn

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL"


def _base_context(purpose: ssl.Purpose, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """A context that trusts nothing yet. Not ``ssl.create_default_context``: it loads the system's public
    CAs, and only the trust space's CAs (``ca_bundle``) may vouch for a peer (and loading ~140 CAs per
    context costs each worker's start-up)."""
    server = purpose is ssl.Purpose.CLIENT_AUTH
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def server_context(cert: Path, key: Path, ca_bundle: Path, *, client_cert: bool = True) -> ssl.SSLContext:
    """Context for our listeners: our chain, and (MTA) a request for the peer's certificate."""
    context = _base_context(ssl.Purpose.CLIENT_AUTH, cert, key)
    if client_cert:
        context.load_verify_locations(cafile=str(ca_bundle))
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def client_context(cert: Path | None, key: Path | None, ca_bundle: Path) -> ssl.SSLContext:
    """Context for connecting to a peer: we present our certificate and verify theirs."""
    context = _base_context(ssl.Purpose.SERVER_AUTH, cert, key)
    context.load_verify_locations(cafile=str(ca_bundle))
    return context


@dataclass(frozen=True)
class PeerTls:
    """What the TLS layer tells us about a connected peer."""

    version: str
    cipher: str
    certificate: x509.Certificate | None

    @property
    def dn(self) -> NormalDn | None:
        return None if self.certificate is None else name_to_dn(self.certificate.subject)

    @property
    def dn_text(self) -> str:
        return "" if self.certificate is None else self.certificate.subject.rfc4514_string()


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, lower-case hex: what identifies one exact certificate."""
    return certificate.fingerprint(hashes.SHA256()).hex()


def peer_tls(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> PeerTls:
    """Read version, cipher and the (already chain-verified) peer certificate of a connection."""
    der = ssl_object.getpeercert(binary_form=True)
    cipher = ssl_object.cipher()
    return PeerTls(
        version=ssl_object.version() or "",
        cipher=cipher[0] if cipher else "",
        certificate=x509.load_der_x509_certificate(der) if der else None,
    )
