"""Client authentication shared by the IMAP server and SMTP submission.

``sasl`` parses the mechanisms' payloads, ``passwords`` / ``tokens`` / ``certificates`` check each kind
of credential (mssante_base.ratelimit slows down guessing), and ``authenticator`` decides who the client is and
which mailboxes it may open and send as (a :class:`Principal`). No sockets here: the servers do I/O.
"""

from __future__ import annotations

from .authenticator import CLIENT_MESSAGE, AuthenticationFailed, Authenticator, Principal
from .certificates import CertificateIdentity, certificate_identity
from .passwords import CredentialStore, CredentialsUnavailable
from .sasl import SaslCancelled, SaslError, mechanisms
from .tokens import TokenError, TokenIdentity, TokenKeysUnavailable, TokenValidator

__all__ = [
    "CLIENT_MESSAGE",
    "AuthenticationFailed",
    "Authenticator",
    "CertificateIdentity",
    "CredentialStore",
    "CredentialsUnavailable",
    "Principal",
    "SaslCancelled",
    "SaslError",
    "TokenError",
    "TokenIdentity",
    "TokenKeysUnavailable",
    "TokenValidator",
    "certificate_identity",
    "mechanisms",
]
