"""The messaging pages: received messages, conversations, one message with its attachments.

Every id in a path is looked up with the session's INS: the store answers None for another patient's
message exactly as for one that does not exist, and both are a 404. An attachment that carries a
document hidden from the reader (a parent, for INVISIBLE_REP_LEGAUX) is withheld: not listed, not
served, not filed (404 too).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web
from aiohttp_session import get_session

from mssante_base.patients.ins import Ins

from ..filing.categories import Category
from ..filing.filetypes import DetectedType, detect_type
from ..filing.mdn import build_mdn
from ..filing.mime import AttachmentPart, attachment, read_message
from ..store import AttachmentRecord, Audience, ConversationSummary, MessageRecord, NewDocument
from .context import WEB, Web
from .pages import acting_for_child, actor_of, audience_of, ins_of, owned, page_of, render
from .security import flash
from .serving import content_response

log = logging.getLogger(__name__)


def conversation_url(mailbox: str) -> str:
    return f"/conversations/{quote(mailbox, safe='@')}"


async def own_message(request: web.Request) -> MessageRecord:
    """The message of the path's id if it is the patient's; 404 otherwise (whoever's it is)."""
    return await owned(request, request.app[WEB].store.message)


async def conversation_with(context: Web, ins: str, mailbox: str) -> ConversationSummary | None:
    return await context.call(context.store.conversation, ins, mailbox)


NO_REPLY = "Ce message est envoyé automatiquement par le service : il n'est pas possible d'y répondre."
NOT_AS_CHILD = ("Dans l'espace de votre enfant, vous pouvez lire ses messages et ses documents, mais pas écrire "
                "en son nom.")


def writing_refusal(request: web.Request, message: MessageRecord | None = None) -> str | None:
    """Why nothing may be written from this page at all (None: the conversation's rules then decide): a
    parent reads a child's space but does not write as the child; the service's own messages (the
    welcome) take no reply."""
    if acting_for_child(request):
        return NOT_AS_CHILD
    if message is not None and message.no_reply:
        return NO_REPLY
    return None


def reply_refusal(message: MessageRecord, conversation: ConversationSummary | None) -> str | None:
    """Why the patient cannot answer this message (None: they can)."""
    if message.no_reply:
        return NO_REPLY
    if message.direction != "in":
        return "Vous êtes l'auteur de ce message."
    if conversation is None or not conversation.open:
        name = (conversation.name if conversation else "") or message.from_name or message.from_address
        return f"{name} a mis fin à vos échanges."
    return None


async def inbox(request: web.Request) -> web.Response:
    context, ins = request.app[WEB], ins_of(request)
    total = await context.call(context.store.count_messages, ins, "in")
    pages = page_of(request, total)
    messages = await context.call(context.store.messages_page, ins, direction="in", offset=pages.offset,
                                  limit=pages.size)
    shown = {message.id: message.attachments for message in messages}
    if audience_of(request) is not Audience.PATIENT:  # not even the count of what is withheld
        for message in messages:
            if message.attachments:
                withheld = await context.call(context.store.withheld_attachments, ins, message.id,
                                              audience_of(request))
                shown[message.id] -= len(withheld)
    return await render(request, "inbox.html", {"messages": messages, "pages": pages, "total": total,
                                                "shown": shown}, nav="messages")


async def conversations(request: web.Request) -> web.Response:
    context = request.app[WEB]
    summaries = await context.call(context.store.conversations, ins_of(request))
    return await render(request, "conversations.html", {"conversations": summaries,
                                                        "conversation_url": conversation_url}, nav="conversations")


async def thread(request: web.Request) -> web.Response:
    context, ins = request.app[WEB], ins_of(request)
    mailbox = request.match_info["mailbox"].lower()
    messages = await context.call(context.store.thread, ins, mailbox)
    if not messages:
        raise web.HTTPNotFound()
    summary = await conversation_with(context, ins, mailbox)
    name = (summary.name if summary else "") or mailbox
    return await render(request, "thread.html", {"messages": messages, "mailbox": mailbox, "name": name,
                                                 "summary": summary}, nav="conversations")


@dataclass(frozen=True)
class AttachmentRow:
    record: AttachmentRecord
    part: AttachmentPart
    detected: DetectedType


def _mdn(patient_ins: str, patient_name: str, message: MessageRecord) -> bytes | None:
    """The read receipt the sender asked for, built only at the first opening."""
    if not message.mdn_to or message.read_at is not None:
        return None
    address = Ins(patient_ins).address
    return build_mdn(original_message_id=message.message_id, original_recipient=address, to=message.mdn_to,
                     from_address=address, from_name=patient_name, subject_of_original=message.subject,
                     disposition="displayed")


async def _attachment_records(request: web.Request, message: MessageRecord) -> list[AttachmentRecord]:
    """The message's attachments the reader may see (those carrying a document hidden from them left out)."""
    context, ins = request.app[WEB], ins_of(request)
    records = await context.call(context.store.attachments, ins, message.id)
    withheld = await context.call(context.store.withheld_attachments, ins, message.id, audience_of(request))
    return [record for record in records if record.index not in withheld]


async def show_message(request: web.Request) -> web.Response:
    context, ins = request.app[WEB], ins_of(request)
    store = context.store
    message = await own_message(request)
    raw = await context.call(store.read_blob, message.blob_key)
    view = await context.call(read_message, raw)
    records = await _attachment_records(request, message)
    parts = {part.index: part for part in view.attachments}
    rows = [AttachmentRow(record, parts[record.index], detect_type(parts[record.index].data))
            for record in records if record.index in parts]
    if message.direction == "in":
        patient = await context.call(store.patient, ins)
        mdn = None  # a read receipt tells the patient's own reading, not their representative's
        if audience_of(request) is Audience.PATIENT:
            mdn = _mdn(ins, patient.display_name if patient else "", message)
        await context.call(store.open_message, ins, message.id, actor=actor_of(request), mdn=mdn,
                           mdn_to=message.mdn_to if mdn else None)
    mailbox = message.from_address if message.direction == "in" else (message.recipients or ("",))[0]
    conversation = await conversation_with(context, ins, mailbox)
    return await render(request, "message.html", {
        "message": message, "view": view, "attachments": rows, "categories": list(Category),
        "refusal": reply_refusal(message, conversation), "conversation_url": conversation_url(mailbox),
        "writable": writing_refusal(request, message) is None,
    }, nav="messages")


async def _own_attachment(request: web.Request) -> tuple[MessageRecord, AttachmentRecord, AttachmentPart]:
    context = request.app[WEB]
    message = await own_message(request)
    index = int(request.match_info["index"])
    records = await _attachment_records(request, message)
    record = next((record for record in records if record.index == index), None)
    if record is None:
        raise web.HTTPNotFound()
    raw = await context.call(context.store.read_blob, message.blob_key)
    part = await context.call(attachment, raw, index)
    if part is None:
        raise web.HTTPNotFound()
    return message, record, part


async def attachment_content(request: web.Request) -> web.Response:
    context, ins = request.app[WEB], ins_of(request)
    message, record, part = await _own_attachment(request)
    detected = detect_type(part.data)
    download = request.query.get("telecharger") == "1" or not detected.inline_safe
    action = "download-attachment" if download else "view-attachment"
    await context.call(context.store.record_access, ins, action, actor=actor_of(request),
                       detail={"message": message.id, "index": record.index})
    return content_response(part.data, detected.mime_type, part.filename, download=download,
                            fallback=f"piece-jointe-{record.index + 1}")


async def file_attachment(request: web.Request) -> web.StreamResponse:
    """Save an attachment in the patient's documents ("Enregistrer dans mes documents")."""
    context, ins = request.app[WEB], ins_of(request)
    session = await get_session(request)
    message, record, part = await _own_attachment(request)
    back = f"/messages/{message.id}"
    if record.document is not None:
        flash(session, "Cette pièce jointe est déjà dans vos documents.")
        raise web.HTTPSeeOther(f"/documents/{record.document}")
    form = await request.post()
    try:
        category = Category(str(form.get("categorie", "")))
    except ValueError:
        flash(session, "Choisissez une catégorie.", "error")
        raise web.HTTPSeeOther(back) from None
    detected = detect_type(part.data)
    if not detected.fileable:
        flash(session, "Ce type de fichier ne peut pas être enregistré dans vos documents.", "error")
        raise web.HTTPSeeOther(back)
    title = str(form.get("titre", "")).strip()[:200] or _default_title(part.filename, message)
    document = await context.call(context.store.file_document, ins, NewDocument(
        data=part.data, mime_type=detected.mime_type, title=title, category=category,
        structured=detected.structured, filename=part.filename, author_address=message.from_address or None,
        author_name=message.from_name or None, message=message.id, attachment_index=record.index,
    ), actor=actor_of(request))
    log.info("web filed message=%d index=%d document=%d", message.id, record.index, document.id)
    flash(session, "Le document a été enregistré dans vos documents.", "success")
    raise web.HTTPSeeOther(f"/documents/{document.id}")


def _default_title(filename: str | None, message: MessageRecord) -> str:
    stem = (filename or "").rsplit(".", 1)[0].strip()
    return stem or f"Pièce jointe de {message.from_name or message.from_address}"
