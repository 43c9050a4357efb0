"""Which operators may talk to the bridge: TLS with a client certificate, a trusted DN, not revoked.

Both listeners (LMTP intake and registry) require a client certificate chaining to ``ca_bundle``
(OpenSSL refuses the handshake otherwise); the gate then checks what OpenSSL does not: that the
certificate's subject is one of ``trusted_operators`` (compared by meaning, as the liste blanche's DNs
are) and that the CRLs of the trust space do not revoke it.
"""

from __future__ import annotations

import ssl

from cryptography import x509

from mssante_base.trust.dn import NormalDn, name_to_dn
from mssante_base.trust.revocation import RevocationLists, load_certificates
from mssante_base.trust.tls import client_context, server_context

from .settings import BridgeSettings


class OperatorGate:
    """Decides whether a (chain-verified) client certificate belongs to a trusted, unrevoked operator.

    The CRLs can be re-read while the service runs (SIGHUP): the next connection or request sees them.
    """

    def __init__(self, trusted: frozenset[NormalDn], revocations: RevocationLists,
                 settings: BridgeSettings | None = None) -> None:
        self.trusted = trusted
        self.revocations = revocations
        self._settings = settings

    @staticmethod
    def _read_crls(settings: BridgeSettings) -> RevocationLists:
        authorities = load_certificates(settings.path(settings.ca_bundle))
        return RevocationLists.load([settings.path(path) for path in settings.crl_files], authorities)

    @classmethod
    def load(cls, settings: BridgeSettings) -> OperatorGate:
        """Read the CRLs (signature checked against the CA bundle); RevocationError names a bad file."""
        return cls(settings.trusted_dns, cls._read_crls(settings), settings)

    def reload(self) -> None:
        """Re-read the CRLs; on an error (RevocationError) the lists in force stay."""
        if self._settings is not None:
            self.revocations = self._read_crls(self._settings)

    def refusal(self, certificate: x509.Certificate | None) -> str | None:
        """None when the peer may use the bridge; else why not, in a sentence for its administrator."""
        if certificate is None:
            return "a client certificate of the MSSanté trust space is required"
        if self.revocations.is_revoked(certificate):
            return "your client certificate has been revoked by its certification authority"
        if name_to_dn(certificate.subject) not in self.trusted:
            return f"certificate DN {certificate.subject.rfc4514_string()} is not a trusted operator of this bridge"
        return None


def server_tls(settings: BridgeSettings) -> ssl.SSLContext:
    """The listeners' context: our chain, and a client certificate required (CERT_REQUIRED)."""
    context = server_context(settings.path(settings.cert), settings.path(settings.key),
                             settings.path(settings.ca_bundle))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_tls(settings: BridgeSettings) -> ssl.SSLContext:
    """Context for the operator's submission listener: our certificate, theirs verified, no host-name check.

    The operator is reached at a configured address; what identifies it is its chain to the trust CA.
    """
    context = client_context(settings.path(settings.cert), settings.path(settings.key),
                             settings.path(settings.ca_bundle))
    context.check_hostname = False
    return context
