"""The listeners' checks, one small named step each, run in the order a listener lists them per stage.

A check looks at the :class:`~.transaction.Transaction` (and, at RCPT, the :class:`~.transaction.Recipient`
being added), may note what it learnt there (a route, an INS, DKIM results), and raises the
:class:`~..errors.Refusal` that answers the command; :func:`run_checks` stamps the refusal with the check's
name, which the listener logs (``check=``). A check that does not apply to a transaction (a patient check
for a local recipient, say) returns at once. The decisions themselves are the pure functions of
``policy``, ``sender_rules``, ``router`` and ``patients/``; checks only gather their inputs.

Signatures: MAIL and DATA checks take ``(context, transaction)``, RCPT checks ``(context, transaction,
recipient)``; the context is the listener's (``MtaContext``, ``SubmissionContext``; a check both use reads
only the :class:`ListenerContext` part).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from email.utils import getaddresses
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from mssante_base.errors import Refusal
from mssante_base.message import dsn
from mssante_base.patients.ins import parse_patient_address
from mssante_base.smtp import guards
from mssante_base.smtp.replies import PrintableLog
from mssante_operator.smtp import policy, sender_rules

from ..trust_space.dkim import verify_message
from .directory import lookup_mailbox
from .patient_path import PATIENT_TO_PATIENT, check_content
from .router import Route, Target, route_recipient
from .transaction import Recipient, Transaction

if TYPE_CHECKING:
    from mssante_base.annuaire import Annuaire

    from .mta import MtaContext
    from .patient_path import PatientPath
    from .submission import SubmissionContext

log = logging.getLogger(__name__)
log.addFilter(PrintableLog())  # peers' DNs in log lines


class ListenerContext(Protocol):
    """What the checks shared by the MTA and submission listeners read from either's context."""

    local_domains: list[str]
    max_recipients: int
    annuaire: Annuaire
    patients: PatientPath | None  # None: the patient path is closed
    cpu_executor: Executor | None


@dataclass(frozen=True)
class Check:
    """A named check: ``run`` raises the Refusal, or returns None to let the command through."""

    name: str
    run: Callable[..., Awaitable[None]]

    async def __call__(self, *args: Any) -> None:
        try:
            await self.run(*args)
        except Refusal as refusal:
            raise refusal.with_check(self.name) from None


def check(name: str) -> Callable[[Callable[..., Awaitable[None]]], Check]:
    """Decorate an async check function as the :class:`Check` named ``name``."""
    return lambda run: Check(name, run)


async def run_checks(checks: Sequence[Check], *args: Any) -> None:
    """Run ``checks`` in order; the first refusal, stamped with its check's name, is raised."""
    for each in checks:
        await each(*args)


def _refuse(refusal: Refusal | None) -> None:
    if refusal is not None:
        raise refusal


def _routed(rcpt: Recipient, target: Target) -> bool:
    return rcpt.route is not None and rcpt.route.target is target


def author_address(transaction: Transaction) -> str:
    """The From header's first address (the envelope sender when there is none), lower-cased."""
    from_values = transaction.summary.from_values
    return (getaddresses(from_values)[0][1] if from_values else transaction.mail_from).lower()


# --- MAIL -------------------------------------------------------------------------------------

@check("peer_certificate")
async def peer_certificate(ctx: MtaContext, tx: Transaction) -> None:
    """A peer operator presents a certificate that no CRL revokes."""
    peer = tx.peer
    revoked = peer is not None and peer.certificate is not None and ctx.revocations().is_revoked(peer.certificate)
    _refuse(policy.check_peer_certificate(peer, revoked))


@check("sender_domain")
async def sender_domain(ctx: MtaContext, tx: Transaction) -> None:
    """The envelope sender's domain belongs to the peer's operator in the liste blanche (delivery reports aside)."""
    if tx.mail_from == "<>":
        return
    assert tx.peer is not None  # peer_certificate ran first
    _refuse(policy.check_sender_domain(policy.address_domain(tx.mail_from), tx.peer, ctx.liste_blanche()))


@check("envelope_sender")
async def envelope_sender(ctx: SubmissionContext, tx: Transaction) -> None:
    """A user sends as a mailbox the principal may use."""
    assert tx.principal is not None  # aiosmtpd refused MAIL before AUTH
    _refuse(sender_rules.check_envelope_sender(tx.mail_from, tx.principal))


# --- RCPT -------------------------------------------------------------------------------------

@check("recipient_count")
async def recipient_count(ctx: ListenerContext, tx: Transaction, rcpt: Recipient) -> None:
    _refuse(policy.check_recipient_count(len(tx.recipients), ctx.max_recipients))


def _route(rcpt: Recipient, route: Route | Refusal) -> None:
    if isinstance(route, Refusal):
        raise route
    rcpt.route = route


@check("route")
async def route_from_peer(ctx: MtaContext, tx: Transaction, rcpt: Recipient) -> None:
    """Mail from a peer: our domains, or the patient path when it is open; never relayed."""
    _route(rcpt, route_recipient(rcpt.address, local_domains=ctx.local_domains, liste=None,
                                 patients_open=ctx.patients is not None))


@check("route")
async def route_submitted(ctx: SubmissionContext, tx: Transaction, rcpt: Recipient) -> None:
    """Mail from our users: our domains, the patient path, or a domain of the liste blanche."""
    _route(rcpt, route_recipient(rcpt.address, local_domains=ctx.local_domains, liste=ctx.liste_blanche(),
                                 patients_open=ctx.patients is not None))


@check("patient_to_patient")
async def patient_to_patient(ctx: ListenerContext, tx: Transaction, rcpt: Recipient) -> None:
    """A patient (mes_bridge writing for one) never writes to a patient."""
    if _routed(rcpt, Target.PATIENT) and tx.principal is not None and tx.principal.patient_gateway:
        raise PATIENT_TO_PATIENT


@check("patient_recipient")
async def patient_recipient(ctx: ListenerContext, tx: Transaction, rcpt: Recipient) -> None:
    """A patient recipient has a valid INS and a space that takes messages."""
    if _routed(rcpt, Target.PATIENT):
        assert ctx.patients is not None  # the router opens the patient path only then
        rcpt.ins = await ctx.patients.recipient(rcpt.address)


@check("patient_writer")
async def patient_writer(ctx: ListenerContext, tx: Transaction, rcpt: Recipient) -> None:
    """Who writes to a patient is a PER, ORG or APP mailbox (a delivery report to a patient carries no writer)."""
    if _routed(rcpt, Target.PATIENT) and tx.mail_from != "<>":
        assert ctx.patients is not None
        await ctx.patients.writer(tx.mail_from)


@check("local_mailbox")
async def local_mailbox(ctx: ListenerContext, tx: Transaction, rcpt: Recipient) -> None:
    """A local recipient is a mailbox of the annuaire that takes mail."""
    if _routed(rcpt, Target.LOCAL):
        entry = await lookup_mailbox(ctx.annuaire, rcpt.address)
        _refuse(policy.check_recipient_entry(rcpt.address, entry))


@check("patient_reply")
async def patient_reply(ctx: SubmissionContext, tx: Transaction, rcpt: Recipient) -> None:
    """A patient writes only to who opened the conversation with them (or to a pharmacy)."""
    if tx.principal is not None and tx.principal.patient_gateway and not _routed(rcpt, Target.PATIENT):
        assert ctx.patients is not None
        await ctx.patients.reply(parse_patient_address(tx.mail_from), rcpt.address)


# --- DATA -------------------------------------------------------------------------------------

@check("tls_required")
async def tls_required(ctx: ListenerContext, tx: Transaction) -> None:
    """MAIL already refused sessions without TLS; defence in depth."""
    if tx.peer is None:
        raise policy.TLS_REQUIRED


@check("line_endings")
async def line_endings(ctx: ListenerContext, tx: Transaction) -> None:
    _refuse(guards.check_line_endings(tx.data))


@check("from_header")
async def from_header(ctx: MtaContext, tx: Transaction) -> None:
    """The From domain belongs to the peer's operator."""
    assert tx.peer is not None
    _refuse(policy.check_from_header(policy.from_domains(tx.summary.from_values), tx.peer, ctx.liste_blanche()))


@check("dkim")
async def dkim(ctx: MtaContext, tx: Transaction) -> None:
    """A valid DKIM signature aligned with the From domain (verified on the CPU executor); a peer's unsigned
    delivery report about mail we relayed to it is let through (``policy.check_unsigned_report``)."""
    assert tx.peer is not None
    loop = asyncio.get_running_loop()
    tx.dkim = await loop.run_in_executor(ctx.cpu_executor, verify_message, tx.data, ctx.dkim_keys)
    refusal = policy.check_dkim(tx.dkim, policy.from_domains(tx.summary.from_values)[0])
    if refusal is not None and refusal.code >= 500 and tx.mail_from == "<>":
        refusal = await _unsigned_report(ctx, tx, refusal)
    _refuse(refusal)


async def _unsigned_report(ctx: MtaContext, tx: Transaction, refusal: Refusal) -> Refusal | None:
    """A peer's delivery report without DKIM: None to accept it (policy.check_unsigned_report), else why not;
    ``refusal`` (the DKIM one) when the message is no delivery report at all."""
    assert tx.peer is not None
    loop = asyncio.get_running_loop()
    report = await loop.run_in_executor(ctx.cpu_executor, dsn.parse_report, tx.data, ctx.hostname)
    if report is None or ctx.relayed is None:
        return refusal
    try:
        relayed = await asyncio.to_thread(ctx.relayed, report.queue_ids)
    except Exception:  # the database is away: the peer tries again later
        log.exception("queue lookup for a delivery report failed")
        return policy.STORE_FAILED
    found = policy.check_unsigned_report(report, list(tx.recipients), tx.peer, ctx.liste_blanche(), relayed)
    if found is None:
        log.info("unsigned delivery report accepted peer_dn=%r refers_to=%s actions=%s", tx.peer.dn_text,
                 ",".join(sorted({r.queue_id for r in relayed})),
                 ",".join(sorted({o.action for o in report.recipients})))
    return found


async def _content(ctx: ListenerContext, tx: Transaction, *, only_to_patients: bool) -> None:
    patients = list(tx.patients.values())
    if patients or not only_to_patients:
        _refuse(await check_content(tx.data, patients, ctx.cpu_executor))


# The X-MSS headers against the IHE_XDM content: for a message to patients (MTA), for every message that
# announces one (submission).
patient_content = Check("patient_content", partial(_content, only_to_patients=True))
xdm_content = Check("xdm_content", partial(_content, only_to_patients=False))


@check("patient_author")
async def patient_author(ctx: MtaContext, tx: Transaction) -> None:
    """The author (From) of a message to patients is a PER, ORG or APP mailbox; its entry is kept for the
    conversation events. A delivery report has no author."""
    if tx.patients and tx.mail_from != "<>":
        assert ctx.patients is not None
        tx.author = await ctx.patients.writer(author_address(tx))


@check("header_senders")
async def header_senders(ctx: SubmissionContext, tx: Transaction) -> None:
    """From and Sender name mailboxes the principal may use."""
    assert tx.principal is not None
    _refuse(sender_rules.check_header_senders(tx.summary.from_values, tx.summary.sender_values, tx.principal))


@check("patient_from")
async def patient_from(ctx: SubmissionContext, tx: Transaction) -> None:
    """A patient's message comes From the patient's own address."""
    assert tx.principal is not None
    if tx.principal.patient_gateway and author_address(tx) != tx.mail_from.lower():
        raise Refusal(550, "5.7.1", "A patient's message must come From the patient's own address (MAIL FROM)")
