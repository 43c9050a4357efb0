"""The submission listeners (587-style STARTTLS and 465-style implicit TLS): professionals' clients and
applicative mailboxes send here after authenticating.

The dialogue reads top to bottom: AUTH names a Principal (password, client certificate, bearer token,
through the shared ``auth/`` package); MAIL checks the envelope sender against it; RCPT routes each
recipient (local mailbox, patient path, outbound queue, or refused outside the trust space); DATA checks
the From and Sender headers, adds Received (and Date, Message-ID when missing), drops Bcc, signs with
DKIM off the event loop, then commits local copies, the Sent copy and the queue rows in one transaction
before answering 250. DSN parameters (RFC 3461) are read before aiosmtpd sees the command, because
aiosmtpd upper-cases parameters (ENVID and ORCPT are case-sensitive) and refuses the ones it does not know.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiosmtpd.smtp import MISSING, Envelope, Session

from mssante_base.annuaire import Annuaire, AnnuaireUnavailable, BalKind
from mssante_base.errors import Refusal, TemporaryFailure
from mssante_base.message import dsn, headers
from mssante_base.smtp.aiosmtpd_adapter import keeps_syntax
from mssante_base.smtp.arguments import split_address
from mssante_base.smtp.peer import peer_of
from mssante_base.smtp.replies import PrintableLog
from mssante_base.smtp.server import GuardedSMTP
from mssante_operator.smtp import checks, policy

from .. import metrics
from ..auth import sasl
from ..auth.authenticator import AuthenticationFailed, Authenticator, Principal
from ..store.facade import NewMessage
from ..store.queue import OutboundEnvelope, QueuedRecipient, new_queue_id
from ..store.submission import Submission, SubmissionResult
from ..trust_space.dkim_signing import DkimSigner
from ..trust_space.liste_blanche import ListeBlanche
from .checks import author_address, run_checks
from .patient_path import PatientPath, conversation_events
from .router import Target
from .transaction import Recipient, Transaction, begin, current, principal_of, set_principal

log = logging.getLogger(__name__)
audit = logging.getLogger("mssante_operator.audit")
log.addFilter(PrintableLog())  # client text (domains, replies) in log lines
audit.addFilter(PrintableLog())

AUTH_OK = "235 2.7.0 Authentication successful"
AUTH_FAILED = "535 5.7.8 Authentication credentials invalid"
AUTH_UNAVAILABLE = "454 4.7.0 Temporary authentication failure: the directory cannot be reached now; try again later"


@dataclass
class SubmissionContext:
    """What the submission handler consults and where accepted messages go."""

    hostname: str
    local_domains: list[str]
    max_recipients: int
    annuaire: Annuaire
    authenticator: Authenticator
    liste_blanche: Callable[[], ListeBlanche]
    signer: DkimSigner
    commit: Callable[[Submission], Awaitable[SubmissionResult]]  # group commit into the store
    max_lifetime: float
    sent_copy: bool = True
    cpu_executor: Executor | None = None
    on_queued: Callable[[], None] = lambda: None  # wakes the queue runner
    # (sender, message, local addresses that asked NOTIFY=SUCCESS, ENVID): sends the delivery receipt
    on_local_success: Callable[[str, NewMessage, list[str], str | None], None] = lambda *args: None
    patients: PatientPath | None = None  # None: [patients] not configured, the patient path is closed


_DsnParameters = dsn.MailParameters | dsn.RcptParameters


class SubmissionSMTP(GuardedSMTP):
    """GuardedSMTP with our own AUTH (PLAIN, LOGIN, EXTERNAL, OAUTHBEARER, XOAUTH2) and DSN parameters."""

    def __init__(self, handler: SubmissionHandler, **kwargs: Any) -> None:
        super().__init__(handler, auth_required=True, auth_require_tls=True, **kwargs)
        self.submission = handler
        self._pending: _DsnParameters | None = None  # of the MAIL or RCPT being handled

    def _offered(self) -> list[str]:
        peer = peer_of(self.session) if self.session is not None else None
        certificate = peer is not None and peer.certificate is not None
        return sasl.mechanisms(tls=peer is not None, client_certificate=certificate,
                               tokens=self.submission.ctx.authenticator.tokens_enabled)

    def more_extensions(self) -> list[str]:
        offered = self._offered()
        return [*([f"AUTH {' '.join(offered)}"] if offered else []), "DSN"]

    @keeps_syntax("AUTH")
    async def smtp_AUTH(self, arg: str) -> None:
        if await self.check_helo_needed("EHLO"):
            return
        assert self.session is not None
        if not self.session.extended_smtp:
            await self.push("503 5.5.1 Send EHLO first")
            return
        if peer_of(self.session) is None:
            await self.push("538 5.7.11 Encryption required: issue STARTTLS first")
            return
        if self.session.authenticated:
            await self.push("503 5.5.1 Already authenticated")
            return
        parts = (arg or "").split()
        if not parts or len(parts) > 2:
            await self.push("501 5.5.4 Syntax: AUTH mechanism [initial-response]")
            return
        mechanism = parts[0].upper()
        if mechanism not in self._offered():
            await self.push(f"504 5.5.4 {mechanism} is not offered here")
            return
        try:
            reply = await self._authenticate(mechanism, parts[1] if len(parts) == 2 else None)
        except sasl.SaslCancelled:
            reply = "501 5.7.0 Authentication cancelled"
        except sasl.SaslError as exc:
            reply = f"501 5.5.2 Malformed {mechanism} response: {exc}"
        if reply is not None:
            await self.push(reply)

    async def _response(self, initial: str | None, challenge: bytes = b"") -> bytes:
        """The client's (initial or challenged) response, decoded; "=" is an empty initial response."""
        if initial is not None:
            return sasl.decode_response(initial)
        answer = await self.challenge_auth(challenge)
        if answer is MISSING:  # "*" or bad base64: challenge_auth has replied already
            raise _AlreadyAnswered
        assert isinstance(answer, bytes)
        return answer

    async def _authenticate(self, mechanism: str, initial: str | None) -> str | None:
        assert self.session is not None
        ip = self.client_ip or "?"
        auth = self.submission.ctx.authenticator
        try:
            if mechanism == sasl.PLAIN:
                plain = sasl.parse_plain(await self._response(initial))
                attempt = auth.password(plain.authcid, plain.password, ip, plain.authzid, mechanism=mechanism)
            elif mechanism == sasl.LOGIN:
                user = sasl.parse_login_field(await self._response(initial, sasl.LOGIN_USERNAME_CHALLENGE))
                password = sasl.parse_login_field(await self._response(None, sasl.LOGIN_PASSWORD_CHALLENGE), "password")
                attempt = auth.password(user, password, ip, mechanism=mechanism)
            elif mechanism == sasl.EXTERNAL:
                external = sasl.parse_external(await self._response(initial))
                peer = peer_of(self.session)
                assert peer is not None
                attempt = auth.certificate(peer, ip, external.authzid, gateway=True)
            else:
                data = await self._response(initial)
                bearer = sasl.parse_oauthbearer(data) if mechanism == sasl.OAUTHBEARER else sasl.parse_xoauth2(data)
                attempt = auth.bearer(bearer.token, ip, bearer.user, mechanism=mechanism)
            principal = await attempt
        except _AlreadyAnswered:
            return None
        except AuthenticationFailed:  # the reason is logged by the authenticator, never told
            metrics.LOGIN_FAILURES.labels("smtp", mechanism).inc()
            if mechanism in (sasl.OAUTHBEARER, sasl.XOAUTH2):  # RFC 7628 3.2.2: error challenge, then 535
                error = sasl.oauthbearer_error() if mechanism == sasl.OAUTHBEARER else sasl.xoauth2_error()
                await self.challenge_auth(error)
            return AUTH_FAILED
        except (AnnuaireUnavailable, TemporaryFailure) as exc:
            log.warning("submission login could not be checked now: %s", exc)
            return AUTH_UNAVAILABLE
        self.session.authenticated = True
        set_principal(self.session, principal)
        audit.info("submission login user=%s mechanism=%s ip=%s", principal.login, mechanism, ip)
        return AUTH_OK

    @keeps_syntax("MAIL")
    async def smtp_MAIL(self, arg: str) -> None:
        await self._with_dsn(arg, "FROM:", dsn.split_mail_parameters, super().smtp_MAIL)

    @keeps_syntax("RCPT")
    async def smtp_RCPT(self, arg: str) -> None:
        await self._with_dsn(arg, "TO:", dsn.split_rcpt_parameters, super().smtp_RCPT)

    async def _with_dsn(self, arg: str, keyword: str, split: Callable[[str], tuple[_DsnParameters, str]],
                        command: Callable[[str], Awaitable[None]]) -> None:
        """Take the DSN parameters off ``arg`` (kept for the handler hook), run aiosmtpd's ``command`` on the rest."""
        parts = split_address(arg or "", keyword)
        if parts is None:  # not our shape: aiosmtpd answers the syntax error
            await command(arg)
            return
        try:
            parameters, rest = split(parts[1])
        except dsn.DsnSyntaxError as exc:
            await self.push(exc.refusal.reply)
            return
        self._pending = parameters
        await command(parts[0] + rest)

    def take_mail_parameters(self) -> dsn.MailParameters:
        found, self._pending = self._pending, None
        return found if isinstance(found, dsn.MailParameters) else dsn.MailParameters(None, None)

    def take_rcpt_parameters(self) -> dsn.RcptParameters:
        found, self._pending = self._pending, None
        return found if isinstance(found, dsn.RcptParameters) else dsn.RcptParameters(None, None)


class _AlreadyAnswered(Exception):
    """The client cancelled (or garbled) an AUTH exchange and has been answered already."""


# The submission listeners' checks, stage by stage, in the order they run (see checks.py).
MAIL_CHECKS = (checks.envelope_sender,)
RCPT_CHECKS = (checks.recipient_count, checks.route_submitted, checks.patient_to_patient, checks.patient_recipient,
               checks.patient_writer, checks.local_mailbox, checks.patient_reply)
DATA_CHECKS = (checks.line_endings, checks.header_senders, checks.patient_from, checks.xdm_content)


class SubmissionHandler:
    """aiosmtpd handler hooks for the submission listeners: their checks and a little glue."""

    def __init__(self, context: SubmissionContext, *, listener: str = "submission") -> None:
        self.ctx = context
        self.listener = listener  # its name in config.toml, the metrics' label

    async def handle_MAIL(
        self, server: SubmissionSMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        tx = Transaction(peer=peer_of(session), principal=principal_of(session), mail_from=address,
                         mail_options=options, dsn=server.take_mail_parameters())
        try:
            await run_checks(MAIL_CHECKS, self.ctx, tx)
        except Refusal as refusal:
            metrics.refused(self.listener, "mail", refusal.check)
            log.info("submission sender refused user=%s check=%s reply=%r",
                     tx.principal.login if tx.principal else "", refusal.check, refusal.reply)
            return refusal.reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        begin(envelope, tx)
        return "250 2.1.0 Sender accepted"

    async def handle_RCPT(
        self, server: SubmissionSMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        tx, rcpt = current(envelope), Recipient(address.lower(), dsn=server.take_rcpt_parameters())
        try:
            await run_checks(RCPT_CHECKS, self.ctx, tx, rcpt)
        except Refusal as refusal:
            metrics.refused(self.listener, "rcpt", refusal.check)
            log.info("submission rcpt refused domain=%s check=%s reply=%r", policy.address_domain(rcpt.address),
                     refusal.check, refusal.reply)
            return refusal.reply
        if rcpt.address not in tx.recipients:
            tx.recipients[rcpt.address] = rcpt
            envelope.rcpt_tos.append(rcpt.address)
            envelope.rcpt_options.extend(options)
        return "250 2.1.5 Recipient accepted"

    async def handle_DATA(self, server: SubmissionSMTP, session: Session, envelope: Envelope) -> str:
        tx = current(envelope)
        principal = tx.principal
        assert principal is not None
        # the reply's, the Received field's, the queue's and the logs' one id
        tx.queue_id, tx.data = new_queue_id(), envelope.original_content or b""
        try:
            await run_checks(DATA_CHECKS, self.ctx, tx)
        except Refusal as refusal:
            metrics.refused(self.listener, "data", refusal.check)
            log.info("submission data refused id=%s user=%s check=%s reply=%r", tx.queue_id, principal.login,
                     refusal.check, refusal.reply)
            return refusal.reply
        submission = await self._submission(server, session, tx, principal)
        try:
            result = await self.ctx.commit(submission)
        except Exception:
            metrics.refused(self.listener, "data", None)
            log.exception("submission commit failed id=%s", tx.queue_id)
            return policy.STORE_FAILED.reply
        outbound = submission.outbound.recipients if submission.outbound else ()
        if result.queue_id is not None:
            self.ctx.on_queued()
        audit.info("submitted id=%s user=%s mechanism=%s from=%s local=%d outbound=%d size=%d",
                   tx.queue_id, principal.login, principal.mechanism, tx.mail_from,
                   len(submission.local_recipients), len(outbound), len(submission.message.raw))
        wanted = [a for a in submission.local_recipients if dsn.wants_notice(tx.recipients[a].dsn.notify, "success")]
        if wanted:
            self.ctx.on_local_success(tx.mail_from, submission.message, wanted, tx.dsn.envid)
        metrics.SMTP_ACCEPTED.labels(self.listener).inc()
        return f"250 2.0.0 Message accepted, id {tx.queue_id}"

    async def _submission(self, server: SubmissionSMTP, session: Session, tx: Transaction,
                          principal: Principal) -> Submission:
        """The checked message with our headers and DKIM signature, and where it goes."""
        summary, from_address = tx.summary, author_address(tx)
        now = datetime.now(UTC)
        prepared, message_id = headers.prepare_submission(tx.data, summary, id_domain=self.ctx.hostname, when=now)
        peer = tx.peer
        assert peer is not None
        recipients = list(tx.recipients)
        trace = headers.received_header(
            helo=session.host_name or "unknown", client_ip=server.client_ip or "unknown", hostname=self.ctx.hostname,
            protocol="ESMTPSA", tls=f"{peer.version} {peer.cipher}", queue_id=tx.queue_id,
            recipient=recipients[0] if len(recipients) == 1 else None, when=now,
        )
        unsigned = trace + prepared
        loop = asyncio.get_running_loop()
        signature = await loop.run_in_executor(self.ctx.cpu_executor, self.ctx.signer.sign, unsigned)
        raw = signature + unsigned
        local = tx.addresses(Target.LOCAL)
        remote = tuple(  # peer operators and patients: both through the queue
            QueuedRecipient(a, tx.recipients[a].dsn.orcpt, tx.recipients[a].dsn.notify)
            for a in tx.addresses(Target.OUTBOUND, Target.PATIENT)
        )
        message = NewMessage(raw=raw, message_id=message_id, from_addr=summary.from_text, subject=summary.subject,
                             authentication_results="", received_at=now)
        events = conversation_events(summary, mailbox=from_address, kind=_kind_of(principal, from_address),
                                     patients=list(tx.patients.values()), message_id=message_id,
                                     actor=principal.login, at=now)
        return Submission(
            message=message,
            local_recipients=local,
            sent_copy_for=tx.mail_from if self.ctx.sent_copy and not principal.patient_gateway else None,
            conversations=tuple(events),
            outbound=OutboundEnvelope(sender=tx.mail_from, recipients=remote, message_id=message_id,
                                      submitted_by=principal.login, envid=tx.dsn.envid, ret=tx.dsn.ret)
            if remote else None,
            expires_at=now + timedelta(seconds=self.ctx.max_lifetime),
            queue_id=tx.queue_id,
        )


def _kind_of(principal: Principal, address: str) -> BalKind:
    """The kind of the mailbox the principal sends as: its own, or a delegated ORG mailbox."""
    for entry in (principal.own, *principal.delegated):
        if entry.address == address:
            return entry.kind
    return BalKind.CAB  # not reached: the sender rules admit only those
