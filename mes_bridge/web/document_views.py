"""The dossier pages: documents by category with filters, one document, its content, masking, upload.

A document hidden from whoever reads (INVISIBLE_PATIENT until released; INVISIBLE_REP_LEGAUX from a
parent in a child's space) is never listed nor served: the store leaves it out of every answer for that
audience, so its id is a 404 like another patient's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import partial
from urllib.parse import urlencode

from aiohttp import web
from aiohttp_session import get_session

from ..filing.categories import Category
from ..filing.filetypes import SAFE_INLINE
from ..store import DocumentFilter, DocumentNotFound, DocumentRecord, NewDocument
from .context import WEB
from .pages import PARIS, actor_of, audience_of, ins_of, owned, page_of, render
from .security import flash
from .serving import content_response
from .uploads import ACCEPT, FORMATS_FR, UploadRefused, read_uploads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Filters:
    """The list's filters as typed (to fill the form again) and as the store takes them."""

    categorie: str = ""
    auteur: str = ""
    du: str = ""
    au: str = ""
    problem: str | None = None

    def store_filter(self) -> DocumentFilter:
        since = _day(self.du)
        until = _day(self.au)
        return DocumentFilter(
            category=Category(self.categorie) if self.categorie else None, author=self.auteur or None,
            since=datetime.combine(since, time(), PARIS) if since else None,
            until=datetime.combine(until + timedelta(days=1), time(), PARIS) - timedelta(microseconds=1)
            if until else None)

    def query(self, **changes: str) -> str:
        """The list's query string with these filters (and ``changes``), for links and pagination."""
        values = {"categorie": self.categorie, "auteur": self.auteur, "du": self.du, "au": self.au, **changes}
        return urlencode({key: value for key, value in values.items() if value})


def _day(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


def _filters(request: web.Request) -> Filters:
    query = request.query
    categorie = query.get("categorie", "")
    du, au = query.get("du", "").strip(), query.get("au", "").strip()
    problem = None
    if categorie not in {"", *Category}:
        categorie, problem = "", "Catégorie inconnue : tous les documents sont affichés."
    if (du and _day(du) is None) or (au and _day(au) is None):
        du, au, problem = "", "", "Date incorrecte (format attendu : AAAA-MM-JJ) : le filtre de dates est ignoré."
    return Filters(categorie=categorie, auteur=query.get("auteur", "")[:320], du=du, au=au, problem=problem)


async def own_document(request: web.Request) -> DocumentRecord:
    """The path's document if it is the patient's and visible to the reader; 404 otherwise."""
    return await owned(request, partial(request.app[WEB].store.document, audience=audience_of(request)))


async def documents(request: web.Request) -> web.Response:
    context, ins, audience = request.app[WEB], ins_of(request), audience_of(request)
    store = context.store
    filters = _filters(request)
    wanted = filters.store_filter()
    total = await context.call(store.count_documents, ins, wanted, audience=audience)
    pages = page_of(request, total)
    found = await context.call(store.documents, ins, wanted, offset=pages.offset, limit=pages.size,
                               audience=audience)
    counts = await context.call(store.category_counts, ins, audience=audience)
    authors = await context.call(store.authors, ins, audience=audience)
    return await render(request, "documents.html", {
        "documents": found, "pages": pages, "total": total, "filters": filters, "authors": authors,
        "categories": [(category, counts.get(category, 0)) for category in Category],
        "all_count": sum(counts.values()),
    }, nav="documents")


async def show_document(request: web.Request) -> web.Response:
    document = await own_document(request)
    return await render(request, "document.html", {"document": document, "inline": document.mime_type in SAFE_INLINE},
                        nav="documents")


async def document_content(request: web.Request) -> web.Response:
    context, ins = request.app[WEB], ins_of(request)
    document = await own_document(request)
    data = await context.call(context.store.read_blob, document.blob_key)
    download = request.query.get("telecharger") == "1"
    action = "download-document" if download else "view-document"
    await context.call(context.store.record_access, ins, action, actor=actor_of(request),
                       detail={"document": document.id})
    return content_response(data, document.mime_type, document.filename, download=download,
                            fallback=f"document-{document.id}")


async def toggle_mask(request: web.Request) -> web.StreamResponse:
    """Mask the document from professionals, or show it to them again (MASQUE_PS)."""
    context, ins = request.app[WEB], ins_of(request)
    document = await own_document(request)
    masked = not document.masked_from_professionals
    try:
        await context.call(context.store.set_masked, ins, document.id, masked, actor=actor_of(request),
                           audience=audience_of(request))
    except DocumentNotFound:  # hidden or gone between the two calls
        raise web.HTTPNotFound() from None
    flash(await get_session(request), "Le document est masqué aux professionnels de santé." if masked
          else "Le document est de nouveau visible par les professionnels de santé.", "success")
    raise web.HTTPSeeOther(f"/documents/{document.id}")


def _upload_context(request: web.Request) -> dict[str, object]:
    return {"categories": list(Category), "accept": ACCEPT, "formats": FORMATS_FR,
            "max_mb": request.app[WEB].settings.max_upload_size // (1024 * 1024)}


async def upload_form(request: web.Request) -> web.Response:
    return await render(request, "upload.html", {**_upload_context(request), "values": {}}, nav="documents")


async def upload(request: web.Request) -> web.StreamResponse:
    context, ins = request.app[WEB], ins_of(request)
    form = await request.post()
    values = {"titre": str(form.get("titre", "")).strip()[:200], "categorie": str(form.get("categorie", ""))}
    problem = None
    try:
        uploads = read_uploads(form.getall("fichier", []), context.settings.max_upload_size)
        if len(uploads) != 1:
            problem = "Choisissez un fichier."
    except UploadRefused as exc:
        problem = str(exc)
    if problem is None and values["categorie"] not in set(Category):
        problem = "Choisissez une catégorie."
    if problem is not None:
        return await render(request, "upload.html", {**_upload_context(request), "values": values,
                                                     "error": problem}, status=400, nav="documents")
    upload = uploads[0]
    document = await context.call(context.store.file_document, ins, NewDocument(
        data=upload.data, mime_type=upload.detected.mime_type, title=values["titre"] or upload.stem,
        category=Category(values["categorie"]), structured=upload.detected.structured, filename=upload.filename,
    ), actor=actor_of(request))
    log.info("web upload document=%d size=%d", document.id, len(upload.data))
    flash(await get_session(request), "Votre document a été ajouté.", "success")
    raise web.HTTPSeeOther(f"/documents/{document.id}")
