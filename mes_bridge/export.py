"""The person's right to get everything back: one ZIP of their space as a reader (``Audience``) may see it.

The archive holds::

    messages/NNNN-in.eml, NNNN-out.eml   every message, both directions, oldest first (the welcome too)
    documents/NNNN-<file name>           every document the reader may see, oldest first ...
    documents/NNNN.json                  ... and its metadata (title, category, dates, author, sha256 …)
    historique.json                      the history the reader may see, oldest first
    historique.html                      the same as French sentences, a self-contained page
    manifest.json                        INS, date, audience, and the path, size and sha256 of every file

The rules are the pages': a document hidden from the reader is absent, with its history entries, and the
attachment it came from is replaced in its message's .eml by a short notice (``without_attachments``).
Names inside the archive are built from ordinals and sanitised file names only (no path can escape it).
The archive is written onto a file the caller gives (a temporary file, the operator's ``--out``), entry by
entry; titles, subjects and file names are never logged. One audit entry, counts only, says it was made.
"""

from __future__ import annotations

import hashlib
import html
import json
import mimetypes
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from mssante_base.patients.ins import Ins

from .filing.filetypes import safe_filename
from .filing.mime import without_attachments
from .french import PARIS, date_fr
from .sentences import Names, dated, sentence
from .store import Audience, AuditEntry, BridgeStore, DocumentRecord, MessageRecord

MANIFEST = "manifest.json"
HISTORY_JSON = "historique.json"
HISTORY_HTML = "historique.html"


class ExportRefused(Exception):
    """The space cannot be exported (unknown, or deleted at the person's request)."""


@dataclass(frozen=True)
class ExportSummary:
    """What went into an archive (counts only: what may be logged and audited)."""

    messages: int
    documents: int
    history: int


@dataclass
class _Archive:
    """The ZIP being written, and the manifest's line for each file put in it."""

    zip: zipfile.ZipFile
    files: list[dict[str, Any]] = field(default_factory=list)

    def add(self, path: str, data: bytes, when: datetime, *, listed: bool = True) -> None:
        """One file, dated ``when`` in Paris time (ZIP dates are local); listed in the manifest unless it is it."""
        local = when.astimezone(PARIS)
        info = zipfile.ZipInfo(path, date_time=(max(local.year, 1980), local.month, local.day, local.hour,
                                                local.minute, local.second))
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o600 << 16
        self.zip.writestr(info, data)
        if listed:
            self.files.append({"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, indent=2, default=str).encode("utf-8")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _readable(store: BridgeStore, ins: str) -> None:
    record = store.patient(ins)
    if record is None:
        raise ExportRefused(f"no patient space is known for INS {ins}")
    if record.deleted_at is not None:
        raise ExportRefused(f"the space of INS {ins} was deleted at the person's request: it cannot be exported")


def write_export(store: BridgeStore, ins: str, audience: Audience, out: IO[bytes], *, actor: str,
                 viewer: str | None = None) -> ExportSummary:
    """Write the space's archive for ``audience`` onto ``out`` (left open) and audit it as done by ``actor``;
    the history's "Vous" is ``viewer`` (the parent exporting a child's space; by default the person).

    ExportRefused for an unknown or deleted space, checked again once written: the callers discard ``out``
    on error, so the archive of a space deleted meanwhile is neither audited nor handed out."""
    _readable(store, ins)
    generated = datetime.now(UTC)
    with zipfile.ZipFile(out, "w") as archive:
        written = _Archive(archive)
        messages = _messages(store, ins, audience, written)
        documents = store.all_documents(ins, audience=audience)
        _documents(store, documents, messages, written)
        history = list(reversed(store.history(ins, limit=None, audience=audience)))
        names = Names(documents={document.id: document.title for document in documents},
                      messages={record.id: record.subject for record, _ in messages.values()})
        written.add(HISTORY_JSON, _json([_entry(entry) for entry in history]), generated)
        page = history_page(ins, history, names, generated, viewer=viewer or ins)
        written.add(HISTORY_HTML, page.encode("utf-8"), generated)
        written.add(MANIFEST, _json({"ins": ins, "generated_at": generated.isoformat(), "audience": audience.value,
                                     "files": written.files}), generated, listed=False)
    summary = ExportSummary(messages=len(messages), documents=len(documents), history=len(history))
    _readable(store, ins)
    store.audit_event(ins, "export", actor=actor, detail={
        "audience": audience.value, "messages": summary.messages, "documents": summary.documents,
        "history": summary.history})
    return summary


def _messages(store: BridgeStore, ins: str, audience: Audience,
              written: _Archive) -> dict[int, tuple[MessageRecord, str]]:
    """Every message as .eml, less the attachments withheld from ``audience``; row id -> (record, path)."""
    paths: dict[int, tuple[MessageRecord, str]] = {}
    for number, record in enumerate(store.messages(Ins(ins), None), start=1):
        raw = store.read_blob(record.blob_key)
        withheld = store.withheld_attachments(ins, record.id, audience)
        path = f"messages/{number:04d}-{record.direction}.eml"
        written.add(path, without_attachments(raw, withheld) if withheld else raw, record.at)
        paths[record.id] = (record, path)
    return paths


def _documents(store: BridgeStore, documents: list[DocumentRecord],
               messages: dict[int, tuple[MessageRecord, str]], written: _Archive) -> None:
    """Each document's bytes and its metadata beside them."""
    for number, document in enumerate(documents, start=1):
        extension = mimetypes.guess_extension(document.mime_type) or ""
        name = safe_filename(document.filename or f"{document.title}{extension}", f"document{extension}")
        path = f"documents/{number:04d}-{name}"
        written.add(path, store.read_blob(document.blob_key), document.deposited_at)
        source = messages.get(document.message) if document.message is not None else None
        written.add(f"documents/{number:04d}.json", _json({
            "id": document.id, "file": path, "title": document.title, "filename": document.filename,
            "category": {"code": document.category.value, "label": document.category.label},
            "mime_type": document.mime_type, "structured": document.structured, "size": document.size,
            "sha256": document.sha256, "document_date": _iso(document.document_date),
            "deposited_at": _iso(document.deposited_at), "deposited_by": document.deposited_by,
            "author": {"address": document.author_address, "name": document.author_name},
            "masked_from_professionals": document.masked_from_professionals,
            "source_message": None if source is None else {
                "id": source[0].id, "message_id": source[0].message_id, "file": source[1],
                "attachment_index": document.attachment_index},
        }), document.deposited_at)


def _entry(entry: AuditEntry) -> dict[str, Any]:
    return {"id": entry.id, "at": entry.at.isoformat(), "actor": entry.actor, "action": entry.action,
            "detail": entry.detail, "hash": entry.hash}


PAGE_STYLE = ("body{font-family:sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem;line-height:1.5}"
              "li{margin:.4rem 0}time{display:block;color:#555;font-size:.9em}")


def history_page(ins: str, history: Iterable[AuditEntry], names: Names, generated: datetime, *,
                 viewer: str) -> str:
    """The history as French sentences: a self-contained HTML page (no script, no link), all text escaped."""
    items = "\n".join(
        f'<li><time datetime="{html.escape(entry.at.isoformat())}">{html.escape(dated(entry))}</time>'
        f"{html.escape(sentence(entry, viewer, names))}</li>" for entry in history)
    return (f'<!doctype html>\n<html lang="fr">\n<head>\n<meta charset="utf-8">\n'
            f"<title>Historique de votre espace santé</title>\n<style>{PAGE_STYLE}</style>\n</head>\n<body>\n"
            f"<h1>Historique de votre espace santé</h1>\n"
            f"<p>Espace de l'INS {html.escape(ins)}, historique exporté le {html.escape(date_fr(generated))}."
            f" Chaque action sur l'espace y figure, la plus ancienne en premier.</p>\n"
            f'<ol>\n{items}\n</ol>\n</body>\n</html>\n')
