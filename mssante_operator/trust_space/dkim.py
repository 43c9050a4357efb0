"""DKIM verification and signing (dkimpy), with public keys from DNS or from a static table.

Verification returns one result per signature, in RFC 8601 vocabulary, so the policy can tell a
signature that is wrong (permanent) from a key that could not be fetched now (temporary). These
functions are synchronous and CPU-bound: callers run them off the event loop.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import dkim
import dns.exception
import dns.name
import dns.resolver

from mssante_base.errors import TemporaryFailure

log = logging.getLogger(__name__)

DkimOutcome = Literal["pass", "fail", "neutral", "temperror", "permerror"]


class KeyLookupError(TemporaryFailure):
    """The public key could not be fetched now (DNS timeout, SERVFAIL)."""


class KeySource(Protocol):
    def txt(self, name: str) -> bytes | None:
        """The TXT record at ``name`` (no trailing dot), None when it does not exist.

        Raises KeyLookupError when the answer cannot be had now.
        """


class StaticKeys:
    """A fixed table ``selector._domainkey.domain -> TXT`` standing in for DNS (demo kit, tests)."""

    def __init__(self, table: Mapping[str, str]) -> None:
        self._table = {name.lower().rstrip("."): value for name, value in table.items()}

    def txt(self, name: str) -> bytes | None:
        value = self._table.get(name.lower().rstrip("."))
        return None if value is None else value.encode("ascii")


class DnsKeys:
    """Public keys from DNS TXT records, through dnspython."""

    def __init__(self, timeout: float = 5.0) -> None:
        self._resolver = dns.resolver.Resolver()
        self._resolver.lifetime = timeout

    def txt(self, name: str) -> bytes | None:
        try:
            answer = self._resolver.resolve(name, "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except (dns.exception.SyntaxError, dns.name.NameTooLong, dns.name.IDNAException):
            # d= and s= come from the message: a name that cannot exist in DNS holds no key
            # (a permanent failure of that signature, not a reason for the peer to retry).
            return None
        except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.NoResolverConfiguration) as exc:
            raise KeyLookupError(f"DNS lookup of {name} failed: {exc.__class__.__name__}") from exc
        return b"".join(b"".join(record.strings) for record in answer)


@dataclass(frozen=True)
class DkimResult:
    """The outcome of one DKIM-Signature header."""

    result: DkimOutcome
    domain: str = ""
    selector: str = ""
    b_prefix: str = ""  # first characters of b=, to tell signatures apart (RFC 6008)
    reason: str = ""


_TAG = re.compile(rb"(?:^|;)\s*([a-z]+)\s*=\s*([^;]*)")


def _signature_tags(value: bytes) -> dict[bytes, bytes]:
    return {m.group(1): re.sub(rb"\s+", b"", m.group(2)) for m in _TAG.finditer(value)}


def _one_signature(verifier: dkim.DKIM, index: int, tags: dict[bytes, bytes], keys: KeySource) -> DkimResult:
    domain = tags.get(b"d", b"").decode("ascii", "replace").lower()
    selector = tags.get(b"s", b"").decode("ascii", "replace")
    b_prefix = tags.get(b"b", b"")[:8].decode("ascii", "replace")

    def result(outcome: DkimOutcome, reason: str = "") -> DkimResult:
        return DkimResult(outcome, domain, selector, b_prefix, reason)

    lookups: dict[str, bytes | None] = {}

    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:
        try:
            text = name.decode("utf-8") if isinstance(name, bytes) else name
        except UnicodeDecodeError:  # 8-bit junk in d= or s=: not a name anything is published at
            lookups[repr(name)] = None
            return None
        lookups[text] = keys.txt(text.rstrip("."))
        return lookups[text]

    try:
        valid = verifier.verify(idx=index, dnsfunc=dnsfunc)
    except KeyLookupError as exc:
        return result("temperror", str(exc))
    except dkim.DKIMException as exc:
        reason = str(exc) or exc.__class__.__name__
        # dkimpy raises for a body that does not match bh=; RFC 6376 6.1.3 calls that a failed
        # verification (a tampered message, "fail"), not an unusable signature ("permerror").
        if reason.startswith("body hash mismatch"):
            return result("fail", "body hash did not verify")
        return result("permerror", reason)
    if valid:
        return result("pass")
    if lookups and all(value is None for value in lookups.values()):
        return result("permerror", f"no public key at {selector}._domainkey.{domain}")
    return result("fail", "signature did not verify")


def verify_message(message: bytes, keys: KeySource) -> list[DkimResult]:
    """Verify every DKIM-Signature of ``message``; an empty list means the message is unsigned."""
    try:
        verifier = dkim.DKIM(message, minkey=1024, timeout=5)
    except (dkim.DKIMException, IndexError) as exc:
        # dkimpy cannot split the header block (a line without a colon, a continuation line first):
        # no signature of this message can verify, ever. That is the message's permanent failure,
        # not an internal error to answer 451 to (the peer would retry it forever).
        return [DkimResult("permerror", reason=f"header block not readable: {exc.__class__.__name__}")]
    signatures = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    return [
        _one_signature(verifier, index, _signature_tags(value), keys)
        for index, value in enumerate(signatures)
    ]


def sign_message(message: bytes, *, domain: str, selector: str, private_key_pem: bytes) -> bytes:
    """The DKIM-Signature header line (with CRLF) for ``message``, relaxed/relaxed, rsa-sha256."""
    header = dkim.sign(
        message,
        selector.encode("ascii"),
        domain.encode("ascii"),
        private_key_pem,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"mime-version",
                         b"content-type", b"x-mss-ins", b"x-mss-codecda", b"x-mss-mes"],
    )
    return header


def txt_record_for(public_key_der: bytes) -> str:
    """The DNS TXT value publishing an RSA public key (SubjectPublicKeyInfo DER)."""
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(public_key_der).decode("ascii")
