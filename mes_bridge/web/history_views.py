"""The history page: every action on the space, newest first, as French sentences told to whoever reads
(a parent in a child's space does not see the entries about documents hidden from representatives)."""

from __future__ import annotations

from aiohttp import web

from ..sentences import Names, dated, sentence
from ..store import Audience, AuditEntry, BridgeStore
from .context import WEB
from .pages import audience_of, ins_of, page_of, render, viewer_of


def _ids(entries: list[AuditEntry], key: str) -> set[int]:
    found = set()
    for entry in entries:
        value = entry.detail.get(key)
        if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
            found.add(int(value))
    return found


def _names(store: BridgeStore, ins: str, entries: list[AuditEntry], audience: Audience) -> Names:
    """Titles and subjects the reader may see (the store leaves out entries about hidden documents)."""
    documents = {}
    for document_id in _ids(entries, "document"):
        document = store.document(ins, document_id, audience=audience)
        if document is not None:
            documents[document_id] = document.title
    messages = {}
    for message_id in _ids(entries, "message"):
        message = store.message(ins, message_id)
        if message is not None:
            messages[message_id] = message.subject
    return Names(documents=documents, messages=messages)


async def history(request: web.Request) -> web.Response:
    context, ins, audience = request.app[WEB], ins_of(request), audience_of(request)
    store = context.store
    total = await context.call(store.count_history, ins, audience=audience)
    pages = page_of(request, total)
    entries = await context.call(store.history, ins, offset=pages.offset, limit=pages.size, audience=audience)
    names = await context.call(_names, store, ins, entries, audience)
    viewer = viewer_of(request)  # "Vous" is whoever reads: the parent, in a child's space
    lines = [(entry, dated(entry), sentence(entry, viewer, names)) for entry in entries]
    return await render(request, "history.html", {"lines": lines, "pages": pages, "total": total},
                        nav="history")
