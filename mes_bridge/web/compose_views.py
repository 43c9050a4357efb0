"""Writing to professionals: a reply, or a new message to an open conversation or a pharmacy.

A patient may write only to a mailbox that wrote to them and did not end the exchange, or to a
pharmacy's ORG mailbox (found by its FINESS number in the annuaire). The page offers only those; the
operator applies the same rules again at submission, and its refusal is shown to the patient as is.
Nothing is written from a child's space (the parent reads it), nor in reply to the service's own
messages (the welcome): the forms are not offered and their POST is refused (403).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp_session import get_session

from mssante_base.annuaire import AnnuaireUnavailable, BalKind, MailboxEntry
from mssante_base.patients.ins import Ins

from ..outgoing import BridgeSendError, PatientCannotSend
from ..store import MessageRecord
from .context import WEB, Web
from .message_views import conversation_url, conversation_with, own_message, reply_refusal, writing_refusal
from .pages import actor_of, ins_of, render
from .security import flash
from .uploads import ACCEPT, UploadRefused, read_uploads

log = logging.getLogger(__name__)

FINESS = re.compile(r"[0-9]{2}[0-9AB][0-9]{6}")
MAX_SUBJECT = 200
MAX_BODY = 100_000


@dataclass(frozen=True)
class Recipient:
    address: str
    name: str
    pharmacy: bool = False


def _pharmacy(entry: MailboxEntry) -> bool:
    return entry.pharmacy and entry.kind is BalKind.ORG and entry.can_receive


async def _recipients(context: Web, ins: str, finess: str) -> tuple[list[Recipient], str | None]:
    """Open conversations, and the pharmacies of a FINESS number; a French problem sentence if any."""
    summaries = await context.call(context.store.conversations, ins)
    found = [Recipient(summary.mailbox, summary.name or summary.mailbox) for summary in summaries if summary.open]
    if not finess:
        return found, None
    if not FINESS.fullmatch(finess) or context.annuaire is None:
        return found, "Ce numéro FINESS n'est pas valable (9 caractères)."
    try:
        entries = await context.annuaire.by_structure(finess)
    except AnnuaireUnavailable:
        return found, "L'annuaire ne répond pas : réessayez dans quelques instants."
    pharmacies = [Recipient(entry.address, entry.display_name or entry.address, True)
                  for entry in entries if _pharmacy(entry)]
    if not pharmacies:
        return found, "Aucune pharmacie n'a de messagerie sécurisée sous ce numéro FINESS."
    known = {recipient.address for recipient in found}
    return found + [pharmacy for pharmacy in pharmacies if pharmacy.address not in known], None


async def _allowed(context: Web, ins: str, address: str) -> bool:
    """Checked again at POST: an open conversation, or a pharmacy the annuaire knows."""
    conversation = await conversation_with(context, ins, address)
    if conversation is not None:
        return conversation.open
    if context.annuaire is None or not address:
        return False
    try:
        entry = await context.annuaire.lookup(address)
    except AnnuaireUnavailable:
        return False
    return entry is not None and _pharmacy(entry)


async def _send(request: web.Request, *, to: str, in_reply_to: str | None) -> str | None:
    """Send the posted message; None once it was accepted, else the sentence saying why not."""
    context, ins = request.app[WEB], ins_of(request)
    form = await request.post()
    subject = str(form.get("objet", "")).strip()
    body = str(form.get("message", "")).replace("\r\n", "\n")
    if not subject or len(subject) > MAX_SUBJECT or any(ord(ch) < 32 for ch in subject):
        return f"Indiquez un objet d'au plus {MAX_SUBJECT} caractères, sur une ligne."
    if not body.strip() or len(body) > MAX_BODY:
        return "Écrivez votre message (100 000 caractères au plus)."
    try:
        uploads = read_uploads(form.getall("pieces", []), context.settings.max_upload_size)
    except UploadRefused as exc:
        return str(exc)
    try:
        outcome = await context.sender(
            context.settings, ins=Ins(ins), to=[to], subject=subject, body=body,
            attachments=[(upload.filename, upload.data, upload.detected.mime_type) for upload in uploads],
            in_reply_to=in_reply_to, store=context.store, actor=actor_of(request))
    except BridgeSendError as exc:
        log.warning("web send failed code=%s", exc.code)
        return f"Votre message n'a pas pu être envoyé : {exc.reply}"
    except PatientCannotSend:
        return "Votre espace ne peut pas envoyer de message."
    if outcome.refused:
        return "La messagerie a refusé votre message : " + " ; ".join(
            f"{address} : {reply}" for address, reply in outcome.refused.items())
    log.info("web sent message_id=%s", outcome.message_id)
    return None


def _values(form: Any) -> dict[str, str]:
    return {"objet": str(form.get("objet", "")), "message": str(form.get("message", ""))}


async def _reply_refusal(request: web.Request, message: MessageRecord) -> tuple[str | None, int]:
    """Why this message cannot be answered here, and the status saying so (None, 200: it can)."""
    refused = writing_refusal(request, message)
    if refused is not None:
        return refused, 403
    context = request.app[WEB]
    refused = reply_refusal(message, await conversation_with(context, ins_of(request), message.from_address))
    return refused, 409 if refused else 200


async def reply_form(request: web.Request) -> web.Response:
    message = await own_message(request)
    refusal, status = await _reply_refusal(request, message)
    subject = message.subject if message.subject.lower().startswith("re:") else f"Re: {message.subject}"
    return await render(request, "reply.html", {"message": message, "refusal": refusal, "accept": ACCEPT,
                                                "values": {"objet": subject, "message": ""}},
                        status=status, nav="messages")


async def reply(request: web.Request) -> web.StreamResponse:
    message = await own_message(request)
    refusal, status = await _reply_refusal(request, message)
    problem = refusal or await _send(request, to=message.from_address, in_reply_to=message.message_id)
    if problem is not None:
        return await render(request, "reply.html", {
            "message": message, "refusal": refusal, "error": problem, "accept": ACCEPT,
            "values": _values(await request.post())}, status=status if refusal else 400, nav="messages")
    flash(await get_session(request), "Votre message a été envoyé.", "success")
    raise web.HTTPSeeOther(conversation_url(message.from_address))


async def _not_here(request: web.Request) -> web.Response | None:
    """The page saying why no message may be written from here (a child's space), if so."""
    refusal = writing_refusal(request)
    if refusal is None:
        return None
    return await render(request, "new.html", {"refusal": refusal}, status=403, nav="new")


async def new_form(request: web.Request) -> web.Response:
    context, ins = request.app[WEB], ins_of(request)
    refused = await _not_here(request)
    if refused is not None:
        return refused
    finess = request.query.get("finess", "").strip().upper()
    recipients, problem = await _recipients(context, ins, finess)
    return await render(request, "new.html", {"recipients": recipients, "finess": finess, "finess_error": problem,
                                              "accept": ACCEPT, "values": {"a": request.query.get("a", "")}},
                        nav="new")


async def new(request: web.Request) -> web.StreamResponse:
    context, ins = request.app[WEB], ins_of(request)
    refused = await _not_here(request)
    if refused is not None:
        return refused
    form = await request.post()
    to = str(form.get("a", "")).strip().lower()
    finess = str(form.get("finess", "")).strip().upper()
    problem = None
    if not await _allowed(context, ins, to):
        problem = "Choisissez un destinataire parmi vos échanges en cours ou une pharmacie."
    else:
        problem = await _send(request, to=to, in_reply_to=None)
    if problem is not None:
        recipients, _ = await _recipients(context, ins, finess)
        return await render(request, "new.html", {
            "recipients": recipients, "finess": finess, "error": problem, "accept": ACCEPT,
            "values": {**_values(form), "a": to}}, status=400, nav="new")
    flash(await get_session(request), "Votre message a été envoyé.", "success")
    raise web.HTTPSeeOther(conversation_url(to))
