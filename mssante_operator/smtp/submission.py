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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import getaddresses
from typing import Any

from aiosmtpd.smtp import MISSING, Envelope, Session

from ..annuaire import Annuaire, AnnuaireUnavailable
from ..annuaire.base import BalKind
from ..auth import sasl
from ..auth.authenticator import AuthenticationFailed, Authenticator, Principal
from ..errors import Refusal, TemporaryFailure
from ..patients.ins import Ins, parse_patient_address
from ..store.facade import NewMessage
from ..store.queue import OutboundEnvelope, QueuedRecipient, new_queue_id
from ..store.submission import Submission, SubmissionResult
from ..trust_space.dkim_signing import DkimSigner
from ..trust_space.liste_blanche import ListeBlanche
from ..trust_space.tls import PeerTls
from . import dsn, headers, policy, sender_rules
from .aiosmtpd_adapter import keeps_syntax
from .patient_path import PATIENT_TO_PATIENT, PatientPath, check_content, conversation_events
from .replies import PrintableLog
from .router import Route, Target, route_recipient
from .server import GuardedSMTP

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


@dataclass
class _Transaction:
    """DSN parameters and routes of the current mail transaction (reset by MAIL)."""

    mail: dsn.MailParameters = field(default_factory=lambda: dsn.MailParameters(None, None))
    rcpt: dict[str, dsn.RcptParameters] = field(default_factory=dict)
    routes: dict[str, Route] = field(default_factory=dict)
    patients: dict[str, Ins] = field(default_factory=dict)  # patient recipients and their INS


def _peer(session: Session) -> PeerTls | None:
    return getattr(session, "peer_tls", None)


def _principal(session: Session) -> Principal | None:
    return getattr(session, "principal", None)


def _split_address(arg: str, keyword: str) -> tuple[str, str] | None:
    """("FROM:<a@b>", " PARAMS") from "FROM:<a@b> PARAMS"; None when the shape is not that."""
    if arg[: len(keyword)].upper() != keyword:
        return None
    rest = arg[len(keyword):].lstrip()
    end = rest.find(">") + 1 if rest.startswith("<") else (rest.find(" ") if " " in rest else len(rest))
    if end <= 0:
        return None
    return arg[: len(arg) - len(rest)] + rest[:end], rest[end:]


_DsnParameters = dsn.MailParameters | dsn.RcptParameters


class SubmissionSMTP(GuardedSMTP):
    """GuardedSMTP with our own AUTH (PLAIN, LOGIN, EXTERNAL, OAUTHBEARER, XOAUTH2) and DSN parameters."""

    def __init__(self, handler: SubmissionHandler, **kwargs: Any) -> None:
        super().__init__(handler, auth_required=True, auth_require_tls=True, **kwargs)
        self.submission = handler
        self.transaction = _Transaction()
        self._pending: _DsnParameters | None = None  # of the MAIL or RCPT being handled

    def _offered(self) -> list[str]:
        peer = _peer(self.session) if self.session is not None else None
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
        if _peer(self.session) is None:
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
                peer = _peer(self.session)
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
            if mechanism in (sasl.OAUTHBEARER, sasl.XOAUTH2):  # RFC 7628 3.2.2: error challenge, then 535
                error = sasl.oauthbearer_error() if mechanism == sasl.OAUTHBEARER else sasl.xoauth2_error()
                await self.challenge_auth(error)
            return AUTH_FAILED
        except (AnnuaireUnavailable, TemporaryFailure) as exc:
            log.warning("submission login could not be checked now: %s", exc)
            return AUTH_UNAVAILABLE
        self.session.authenticated = True
        self.session.principal = principal  # type: ignore[attr-defined]
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
        parts = _split_address(arg or "", keyword)
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


class SubmissionHandler:
    """aiosmtpd handler hooks for the submission listeners."""

    def __init__(self, context: SubmissionContext) -> None:
        self.ctx = context

    async def handle_MAIL(
        self, server: SubmissionSMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        parameters = server.take_mail_parameters()
        principal = _principal(session)
        assert principal is not None  # aiosmtpd refused MAIL before AUTH
        refusal = sender_rules.check_envelope_sender(address, principal)
        if refusal is not None:
            log.info("submission sender refused user=%s reply=%r", principal.login, refusal.reply)
            return refusal.reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        server.transaction = _Transaction(mail=parameters)
        return "250 2.1.0 Sender accepted"

    async def handle_RCPT(
        self, server: SubmissionSMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        parameters = server.take_rcpt_parameters()
        address = address.lower()
        if (refusal := policy.check_recipient_count(len(envelope.rcpt_tos), self.ctx.max_recipients)) is not None:
            return refusal.reply
        route = route_recipient(address, local_domains=self.ctx.local_domains, liste=self.ctx.liste_blanche(),
                                patients_open=self.ctx.patients is not None)
        if isinstance(route, Refusal):
            log.info("submission rcpt refused domain=%s reply=%r", policy.address_domain(address), route.reply)
            return route.reply
        principal = _principal(session)
        assert principal is not None
        try:
            await self._check_recipient(server, principal, envelope.mail_from, address, route)
        except Refusal as refusal:
            log.info("submission rcpt refused domain=%s reply=%r", policy.address_domain(address), refusal.reply)
            return refusal.reply
        if address not in envelope.rcpt_tos:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
            server.transaction.rcpt[address] = parameters
            server.transaction.routes[address] = route
        return "250 2.1.5 Recipient accepted"

    async def _check_recipient(self, server: SubmissionSMTP, principal: Principal, sender: str, address: str,
                               route: Route) -> None:
        """The recipient checks beyond routing: the local mailbox, and the patient rules; raise the Refusal."""
        patients = self.ctx.patients
        if route.target is Target.PATIENT:
            assert patients is not None  # the router opens the patient path only then
            if principal.patient_gateway:
                raise PATIENT_TO_PATIENT
            server.transaction.patients[address] = await patients.recipient(address)
            await patients.writer(sender)
            return
        if route.target is Target.LOCAL:
            try:
                entry = await self.ctx.annuaire.lookup(address)
            except AnnuaireUnavailable as exc:
                log.warning("annuaire unavailable for rcpt: %s", exc)
                raise policy.ANNUAIRE_DOWN from None
            if (refusal := policy.check_recipient_entry(address, entry)) is not None:
                raise refusal
        if principal.patient_gateway:  # a patient writes: only to who opened the conversation (or a pharmacy)
            assert patients is not None
            await patients.reply(parse_patient_address(sender), address)

    async def handle_DATA(self, server: SubmissionSMTP, session: Session, envelope: Envelope) -> str:
        principal = _principal(session)
        assert principal is not None
        queue_id = new_queue_id()  # the reply's, the Received field's, the queue's and the logs' one id
        try:
            submission = await self._submission(server, session, envelope, principal, queue_id)
        except Refusal as refusal:
            log.info("submission data refused id=%s user=%s reply=%r", queue_id, principal.login, refusal.reply)
            return refusal.reply
        try:
            result = await self.ctx.commit(submission)
        except Exception:
            log.exception("submission commit failed id=%s", queue_id)
            return policy.STORE_FAILED.reply
        outbound = submission.outbound.recipients if submission.outbound else ()
        if result.queue_id is not None:
            self.ctx.on_queued()
        audit.info("submitted id=%s user=%s mechanism=%s from=%s local=%d outbound=%d size=%d",
                   queue_id, principal.login, principal.mechanism, envelope.mail_from,
                   len(submission.local_recipients), len(outbound), len(submission.message.raw))
        wanted = [a for a in submission.local_recipients
                  if dsn.wants_notice(server.transaction.rcpt[a].notify, "success")]
        if wanted:
            self.ctx.on_local_success(envelope.mail_from, submission.message, wanted, server.transaction.mail.envid)
        return f"250 2.0.0 Message accepted, id {queue_id}"

    async def _submission(self, server: SubmissionSMTP, session: Session, envelope: Envelope,
                          principal: Principal, queue_id: str) -> Submission:
        """Run the DATA checks and prepare the message; raise the Refusal."""
        data: bytes = envelope.original_content or b""
        if (refusal := policy.check_line_endings(data)) is not None:
            raise refusal
        summary = headers.summarise(data)
        refusal = sender_rules.check_header_senders(summary.from_values, summary.sender_values, principal)
        if refusal is not None:
            raise refusal
        from_address = getaddresses(summary.from_values)[0][1].lower()
        if principal.patient_gateway and from_address != envelope.mail_from.lower():
            raise Refusal(550, "5.7.1", "A patient's message must come From the patient's own address (MAIL FROM)")
        transaction = server.transaction
        patients = [transaction.patients[a] for a in envelope.rcpt_tos if a in transaction.patients]
        if (refusal := await check_content(data, patients, self.ctx.cpu_executor)) is not None:
            raise refusal
        now = datetime.now(UTC)
        prepared, message_id = headers.prepare_submission(data, summary, id_domain=self.ctx.hostname, when=now)
        peer = _peer(session)
        assert peer is not None
        trace = headers.received_header(
            helo=session.host_name or "unknown", client_ip=server.client_ip or "unknown", hostname=self.ctx.hostname,
            protocol="ESMTPSA", tls=f"{peer.version} {peer.cipher}", queue_id=queue_id,
            recipient=envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else None, when=now,
        )
        unsigned = trace + prepared
        loop = asyncio.get_running_loop()
        signature = await loop.run_in_executor(self.ctx.cpu_executor, self.ctx.signer.sign, unsigned)
        raw = signature + unsigned
        routes = server.transaction.routes
        local = tuple(a for a in envelope.rcpt_tos if routes[a].target is Target.LOCAL)
        remote = tuple(  # peer operators and patients: both through the queue
            QueuedRecipient(a, server.transaction.rcpt[a].orcpt, server.transaction.rcpt[a].notify)
            for a in envelope.rcpt_tos if routes[a].target in (Target.OUTBOUND, Target.PATIENT)
        )
        mail = server.transaction.mail
        message = NewMessage(raw=raw, message_id=message_id, from_addr=summary.from_text, subject=summary.subject,
                             authentication_results="", received_at=now)
        events = conversation_events(raw, mailbox=from_address, kind=_kind_of(principal, from_address),
                                     patients=patients, message_id=message_id, actor=principal.login, at=now)
        return Submission(
            message=message,
            local_recipients=local,
            sent_copy_for=envelope.mail_from if self.ctx.sent_copy and not principal.patient_gateway else None,
            conversations=tuple(events),
            outbound=OutboundEnvelope(sender=envelope.mail_from, recipients=remote, message_id=message_id,
                                      submitted_by=principal.login, envid=mail.envid, ret=mail.ret) if remote else None,
            expires_at=now + timedelta(seconds=self.ctx.max_lifetime),
            queue_id=queue_id,
        )


def _kind_of(principal: Principal, address: str) -> BalKind:
    """The kind of the mailbox the principal sends as: its own, or a delegated ORG mailbox."""
    for entry in (principal.own, *principal.delegated):
        if entry.address == address:
            return entry.kind
    return BalKind.CAB  # not reached: the sender rules admit only those
