"""The one place that decides who a client is and which mailboxes it may open and send as.

Rules:

- A login names a mailbox of the annuaire that can log in: PER (a professional) or APP (software).
  ORG mailboxes are never logged into directly: their delegates open them; CAB is not specified yet.
- An authzid other than the login is accepted only for an ORG mailbox the login is a delegate of
  (the Principal's ``login`` stays the real user; ``authzid`` records what it acts as).
- A certificate maps, in order, by its email SAN (the mailbox address), else by the RPPS in its
  subject (the professional's PER mailboxes; several: the authzid chooses, else the first by address),
  else, for a certificate that names neither a mailbox nor a person, by the structure id in its OU to that
  structure's APP mailbox (IGC-Santé server certificates of a laboratory's software). A structure
  with several APP mailboxes needs the authzid to say which one; ORG mailboxes are never reached
  this way (they are opened by their delegates).
- A bearer token maps its RPPS to the professional's PER mailboxes the same way (``user_hint``, the
  OAUTHBEARER authzid or the XOAUTH2 user, chooses among them or names a delegated ORG mailbox).
- The store's account of the login decides last, whatever the mechanism: a disabled account cannot log
  in; an APP account bound to a certificate (``account add ADDRESS --cert PEM``) logs in with that very
  certificate only. A mailbox without an account may still log in with a certificate or a token.
- Every failure is counted by the FailureLimiter and answered after its delay; password attempts on a
  locked account or IP are refused without checking the password. Certificates and tokens cannot be
  guessed, so a lockout does not block them (that would let anyone lock a doctor out), but their
  failures are still delayed.

Errors: :class:`AuthenticationFailed` (tell the client only "authentication failed"; ``reason`` is
for the log and never holds a secret); AnnuaireUnavailable, CredentialsUnavailable and
TokenKeysUnavailable, all :class:`~mssante_base.errors.TemporaryFailure`, for a temporary
answer (IMAP ``NO [UNAVAILABLE]``, SMTP 454 4.7.0). Temporary failures are not counted as failures.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NoReturn

from cryptography import x509

from mssante_base.annuaire import Annuaire, BalKind, MailboxEntry
from mssante_base.patients.ins import PATIENT_DOMAIN, is_patient_address
from mssante_base.ratelimit import FailureLimiter
from mssante_base.trust.dn import NormalDn, name_to_dn
from mssante_base.trust.tls import PeerTls, certificate_fingerprint

from ..store.accounts import AccountRecord
from .certificates import allows_client_auth, as_certificate, certificate_identity
from .passwords import CredentialStore, normalize_address
from .sasl import EXTERNAL, OAUTHBEARER, PLAIN
from .tokens import TokenError, TokenValidator

log = logging.getLogger(__name__)

LOGIN_KINDS = frozenset({BalKind.PER, BalKind.APP})
BRIDGE_LOGIN = "mes_bridge"
BRIDGE_ENTRY = MailboxEntry(address=f"mes_bridge@{PATIENT_DOMAIN}", kind=BalKind.APP,
                            display_name="Mon espace santé (patients)")
CLIENT_MESSAGE = "authentication failed"


class AuthenticationFailed(Exception):
    """Authentication refused. Clients get :data:`CLIENT_MESSAGE`; ``reason`` goes to the log only."""

    def __init__(self, reason: str, *, delay: float = 0.0, mechanism: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay  # seconds already waited before raising
        self.mechanism = mechanism  # the SASL mechanism (or LOGIN) that failed: the protocols count failures by it

    @property
    def client_message(self) -> str:
        return CLIENT_MESSAGE


@dataclass(frozen=True)
class Principal:
    """An authenticated client: its own mailbox and the ORG mailboxes it is a delegate of."""

    login: str  # the address they authenticated as (their PER/APP mailbox)
    mechanism: str  # PLAIN, LOGIN, EXTERNAL, OAUTHBEARER, XOAUTH2
    own: MailboxEntry
    delegated: tuple[MailboxEntry, ...] = ()  # ORG mailboxes they are a delegate of
    authzid: str = ""  # the ORG mailbox they asked to act as ("" = themselves)
    patient_gateway: bool = False  # mes_bridge: submits patients' messages, as any patient, and nothing else

    @property
    def acting_as(self) -> str:
        """The mailbox the session works on by default: the authzid, else the login."""
        return self.authzid or self.login

    @property
    def addresses(self) -> tuple[str, ...]:
        """Every mailbox this principal may open and send as: its own first, then the delegated ones."""
        return (self.own.address, *(entry.address for entry in self.delegated))

    def may_open(self, address: str) -> bool:
        """Whether the principal may read ``address`` (IMAP): its own mailbox or a delegated one."""
        return not self.patient_gateway and normalize_address(address) in self.addresses

    def may_send_as(self, address: str) -> bool:
        """Whether the principal may use ``address`` as sender (MAIL FROM / From:).

        The bridge sends as patients only; every other principal as its own and delegated mailboxes.
        """
        if self.patient_gateway:
            return is_patient_address(address)
        return normalize_address(address) in self.addresses


class Authenticator:
    """Turns credentials into a :class:`Principal`, or raises. Safe to share between sessions."""

    def __init__(
        self,
        annuaire: Annuaire,
        credentials: CredentialStore,
        tokens: TokenValidator | None,
        limiter: FailureLimiter,
        *,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        bridge_dn: NormalDn | None = None,
    ) -> None:
        self.annuaire = annuaire
        self.bridge_dn = bridge_dn
        self.credentials = credentials
        self.tokens = tokens
        self.limiter = limiter
        self._sleep = sleep

    @property
    def tokens_enabled(self) -> bool:
        """Whether OAUTHBEARER / XOAUTH2 may be advertised."""
        return self.tokens is not None

    # -- mechanisms ------------------------------------------------------------------------------

    async def password(
        self, login: str, password: str, ip: str, authzid: str = "", *, mechanism: str = PLAIN,
    ) -> Principal:
        """PLAIN or LOGIN: ``login`` must be a PER/APP mailbox whose password is ``password``."""
        login, authzid = normalize_address(login), normalize_address(authzid)
        if self.limiter.locked(login, ip):
            await self._fail(f"{login}: locked out after repeated failures", login, ip, mechanism, count=False)
        entry = await self.annuaire.lookup(login) if login else None
        # Always verify, even for an unknown login: the answer takes the same time either way (argon2 runs
        # on the store's own small pool; a login verified moments ago answers from its cache).
        account = await self.credentials.lookup(login)
        matches = await self.credentials.verify_async(login, password, account)
        if entry is None:
            await self._fail(f"{login}: no such mailbox", login, ip, mechanism)
        if not matches:
            await self._fail(f"{login}: wrong password", login, ip, mechanism)
        return await self._principal(entry, mechanism, authzid, ip, account=account)

    async def certificate(self, cert: PeerTls | x509.Certificate, ip: str, authzid: str = "", *,
                          gateway: bool = False) -> Principal:
        """EXTERNAL: the (TLS-verified) client certificate names the mailbox, see the module docstring.

        With ``gateway`` (the submission listeners), mes_bridge's certificate (``bridge_dn``) is the patient
        gateway; IMAP never passes it, so the bridge cannot open any mailbox.
        """
        authzid = normalize_address(authzid)
        certificate = as_certificate(cert)
        if certificate is None:
            await self._fail("no client certificate", "", ip, EXTERNAL)
        identity = certificate_identity(certificate)
        if not allows_client_auth(certificate):
            await self._fail(f"certificate {identity.dn} is not for client authentication", "", ip, EXTERNAL)
        if self.bridge_dn is not None and name_to_dn(certificate.subject) == self.bridge_dn:
            if not gateway or authzid:
                await self._fail(f"certificate {identity.dn} is mes_bridge's: it only submits for patients", "", ip,
                                 EXTERNAL)
            return Principal(login=BRIDGE_LOGIN, mechanism=EXTERNAL, own=BRIDGE_ENTRY, patient_gateway=True)
        candidates: list[MailboxEntry] = []
        for email in identity.emails:
            entry = await self.annuaire.lookup(email)
            if entry is not None and entry.kind in LOGIN_KINDS:
                candidates.append(entry)
        if not candidates and identity.rpps:
            candidates = await self._per_mailboxes(identity.rpps)
        if not identity.emails and identity.rpps is None and identity.structure_id:
            candidates = await self._app_mailboxes(identity.structure_id)
            if len(candidates) > 1 and authzid not in {e.address for e in candidates}:
                await self._fail(f"certificate {identity.dn} names a structure with several APP mailboxes; "
                                 "the authorisation identity must say which", "", ip, EXTERNAL)
        if not candidates:
            await self._fail(f"certificate {identity.dn} names no mailbox that can log in", "", ip, EXTERNAL)
        own, authzid = _choose(candidates, authzid)
        return await self._principal(own, EXTERNAL, authzid, ip, certificate=certificate)

    async def bearer(self, token: str, ip: str, user_hint: str = "", *, mechanism: str = OAUTHBEARER) -> Principal:
        """OAUTHBEARER / XOAUTH2: a valid token's RPPS names the professional's PER mailbox(es)."""
        user_hint = normalize_address(user_hint)
        if self.tokens is None:
            await self._fail("bearer tokens are not configured", "", ip, mechanism)
        try:
            identity = await asyncio.to_thread(self.tokens.validate, token)
        except TokenError as exc:
            await self._fail(f"token refused: {exc.reason}", "", ip, mechanism)
        candidates = await self._per_mailboxes(identity.rpps)
        if not candidates:
            await self._fail(f"token subject (RPPS {identity.rpps}) has no PER mailbox", "", ip, mechanism)
        own, authzid = _choose(candidates, user_hint)
        return await self._principal(own, mechanism, authzid, ip, account=await self.credentials.lookup(own.address))

    # -- shared rules ----------------------------------------------------------------------------

    async def _per_mailboxes(self, rpps: str) -> list[MailboxEntry]:
        entries = await self.annuaire.by_rpps(rpps)
        return sorted((e for e in entries if e.kind is BalKind.PER), key=lambda e: e.address)

    async def _app_mailboxes(self, structure_id: str) -> list[MailboxEntry]:
        entries = await self.annuaire.by_structure(structure_id)
        return sorted((e for e in entries if e.kind is BalKind.APP), key=lambda e: e.address)

    async def _principal(self, own: MailboxEntry, mechanism: str, authzid: str, ip: str, *,
                         account: AccountRecord | None = None, certificate: x509.Certificate | None = None,
                         ) -> Principal:
        """Check that ``own`` may log in (its account: enabled, its bound certificate) and may act as
        ``authzid``; then the Principal. A certificate login reads the account here."""
        if own.kind not in LOGIN_KINDS:
            await self._fail(f"{own.address}: a {own.kind.value} mailbox cannot log in", own.address, ip, mechanism)
        if certificate is not None:
            account = await self.credentials.lookup(own.address)
        if account is not None and not account.enabled:
            await self._fail(f"{own.address}: account disabled", own.address, ip, mechanism)
        if certificate is not None and account is not None and account.cert_sha256 is not None \
                and certificate_fingerprint(certificate) != account.cert_sha256:
            await self._fail(f"{own.address}: not the certificate bound to the account", own.address, ip, mechanism)
        delegated = tuple(sorted(
            (e for e in await self.annuaire.delegated_to(own.address) if e.kind is BalKind.ORG),
            key=lambda e: e.address,
        ))
        if authzid == own.address:
            authzid = ""
        if authzid and authzid not in {e.address for e in delegated}:
            await self._fail(f"{own.address}: not a delegate of {authzid}", own.address, ip, mechanism)
        self.limiter.succeeded(own.address, ip)
        await self.credentials.logged_in(own.address)
        log.info("authenticated %s mechanism=%s ip=%s%s", own.address, mechanism, ip,
                 f" as {authzid}" if authzid else "")
        return Principal(login=own.address, mechanism=mechanism, own=own, delegated=delegated, authzid=authzid)

    async def _fail(self, reason: str, account: str, ip: str, mechanism: str, *, count: bool = True) -> NoReturn:
        """Count the failure, wait its delay, raise AuthenticationFailed (never returns)."""
        delay = self.limiter.failed(account, ip) if count else self.limiter.delay_for(account, ip)
        reason = _printable(reason)  # it may quote what the client sent: no forged log lines
        log.warning("authentication failed mechanism=%s ip=%s: %s", mechanism, ip, reason)
        if delay > 0:
            await self._sleep(delay)
        raise AuthenticationFailed(reason, delay=delay, mechanism=mechanism)


def _choose(candidates: list[MailboxEntry], wanted: str) -> tuple[MailboxEntry, str]:
    """The candidate named by ``wanted`` (then nothing more is asked), else the first and ``wanted``
    stays as the authzid to check against the delegations."""
    for entry in candidates:
        if entry.address == wanted:
            return entry, ""
    return candidates[0], wanted


def _printable(text: str, limit: int = 300) -> str:
    return "".join("?" if ord(c) < 32 or ord(c) == 127 else c for c in text)[:limit]
