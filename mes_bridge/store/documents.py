"""The dossier: documents filed from messages, saved by the patient or uploaded, with their visibility.

Reading methods never return a document hidden from whoever reads (the ``Audience``): INVISIBLE_PATIENT
(until released) from the patient and their representatives, INVISIBLE_REP_LEGAUX from the
representatives; every query is limited to the patient's INS.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, func, select, update

from mssante_base.storage.blobs import BlobFile

from ..filing.categories import Category
from . import rows
from .core import StoreCore, now
from .records import Audience, DocumentFilter, DocumentRecord, NewDocument
from .schema import BridgeAttachment, BridgeDocument

_TABLE = BridgeDocument.__table__
NO_FILTER = DocumentFilter()
PATIENT_AUTHOR = "patient"  # deposited_by / the documents filter for what the patient filed
ARCHIVE_TYPES = ("application/zip", "application/x-zip-compressed")  # an IHE_XDM.ZIP, as python-magic names it


class DocumentNotFound(LookupError):
    """No such document in this patient's dossier."""


def visible_to(audience: Audience) -> ColumnElement[bool]:
    """The documents ``audience`` may see (of a patient's dossier)."""
    clause = _TABLE.c.hidden_from_patient.is_(False)
    if audience is Audience.REPRESENTATIVE:
        clause = clause & _TABLE.c.hidden_from_legal_reps.is_(False)
    return clause


def hidden_from(audience: Audience) -> ColumnElement[bool]:
    return ~visible_to(audience)


def _filtered(query: Select[Any], ins: str, filt: DocumentFilter, audience: Audience) -> Select[Any]:
    query = query.where(_TABLE.c.ins == ins, visible_to(audience))
    if filt.category is not None:
        query = query.where(_TABLE.c.category == filt.category.value)
    if filt.author == PATIENT_AUTHOR:
        query = query.where(_TABLE.c.deposited_by == PATIENT_AUTHOR)
    elif filt.author is not None:
        query = query.where(_TABLE.c.author_address == filt.author.lower())
    if filt.since is not None:
        query = query.where(_TABLE.c.deposited_at >= filt.since)
    if filt.until is not None:
        query = query.where(_TABLE.c.deposited_at < filt.until)
    return query


class DocumentStore(StoreCore):
    def _insert_document(self, conn: Connection, ins: str, doc: NewDocument, blob: BlobFile, *, deposited_by: str,
                         message: int | None) -> int:
        """One document row (its blob already durable); links the attachment it came from."""
        message = doc.message if message is None else message
        document_id = conn.execute(_TABLE.insert().values(
            ins=ins, title=doc.title, category=doc.category.value, mime_type=doc.mime_type,
            structured=doc.structured, size=len(doc.data), sha256=blob.sha256,
            blob_key=blob.key, filename=doc.filename, document_date=doc.document_date, deposited_at=now(),
            deposited_by=deposited_by, author_address=(doc.author_address or None) and doc.author_address.lower(),
            author_name=doc.author_name, masked_from_professionals=doc.masked_from_professionals,
            hidden_from_patient=doc.hidden_from_patient, hidden_from_legal_reps=doc.hidden_from_legal_reps,
            message=message, attachment_index=doc.attachment_index, xdm_unique_id=doc.xdm_unique_id,
        ).returning(_TABLE.c.id)).scalar_one()
        if message is not None and doc.attachment_index is not None:
            attachments = BridgeAttachment.__table__
            conn.execute(update(attachments).where(
                attachments.c.message == message, attachments.c.idx == doc.attachment_index,
                attachments.c.ins == ins, attachments.c.document.is_(None)).values(document=document_id))
        return document_id

    def documents(self, ins: str, filt: DocumentFilter | None = None, *, offset: int = 0,
                  limit: int = 50, audience: Audience = Audience.PATIENT) -> list[DocumentRecord]:
        """The patient's documents ``audience`` may see, newest first."""
        query = _filtered(select(_TABLE), ins, filt or NO_FILTER, audience).order_by(_TABLE.c.id.desc())
        query = query.offset(offset).limit(limit)
        with self._engine.connect() as conn:
            return [rows.document(row) for row in conn.execute(query)]

    def count_documents(self, ins: str, filt: DocumentFilter | None = None, *,
                        audience: Audience = Audience.PATIENT) -> int:
        with self._engine.connect() as conn:
            query = _filtered(select(func.count()).select_from(_TABLE), ins, filt or NO_FILTER, audience)
            return int(conn.execute(query).scalar_one())

    def category_counts(self, ins: str, *, audience: Audience = Audience.PATIENT) -> dict[Category, int]:
        query = (select(_TABLE.c.category, func.count()).where(_TABLE.c.ins == ins, visible_to(audience))
                 .group_by(_TABLE.c.category))
        with self._engine.connect() as conn:
            counts: dict[str, int] = {category: count for category, count in conn.execute(query)}
        return {category: counts.get(category.value, 0) for category in Category}

    def authors(self, ins: str, *, audience: Audience = Audience.PATIENT) -> list[tuple[str, str]]:
        """(address, name) of those who deposited visible documents; the patient is ("patient", "")."""
        query = (select(_TABLE.c.deposited_by, _TABLE.c.author_address, func.max(_TABLE.c.author_name))
                 .where(_TABLE.c.ins == ins, visible_to(audience))
                 .group_by(_TABLE.c.deposited_by, _TABLE.c.author_address))
        found: dict[str, str] = {}
        with self._engine.connect() as conn:
            for deposited_by, address, name in conn.execute(query):
                key = PATIENT_AUTHOR if deposited_by == PATIENT_AUTHOR else (address or deposited_by)
                found.setdefault(key, name or "")
        return sorted(found.items(), key=lambda item: (item[0] != PATIENT_AUTHOR, item[1] or item[0]))

    def document(self, ins: str, document_id: int, *, include_hidden: bool = False,
                 audience: Audience = Audience.PATIENT) -> DocumentRecord | None:
        query = select(_TABLE).where(_TABLE.c.ins == ins, _TABLE.c.id == document_id)
        if not include_hidden:
            query = query.where(visible_to(audience))
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else rows.document(row)

    def all_documents(self, ins: str, *, audience: Audience | None = None) -> list[DocumentRecord]:
        """Every document of the patient, oldest first: hidden ones included (operator commands), or only
        those ``audience`` may see (the export)."""
        query = select(_TABLE).where(_TABLE.c.ins == ins).order_by(_TABLE.c.id)
        if audience is not None:
            query = query.where(visible_to(audience))
        with self._engine.connect() as conn:
            return [rows.document(row) for row in conn.execute(query)]

    def file_document(self, ins: str, doc: NewDocument, *, actor: str) -> DocumentRecord:
        """The patient files a document (an attachment saved, or an upload): blob durable, row, audit."""
        blob = self.blobs.write(doc.data)
        try:
            with self._writing() as conn:
                document_id = self._insert_document(conn, ins, doc, blob, deposited_by=PATIENT_AUTHOR, message=None)
                detail: dict[str, Any] = {"document": document_id, "category": doc.category.value}
                if doc.message is not None:
                    detail |= {"message": doc.message, "index": doc.attachment_index}
                self._audit(conn, actor=actor, action="file", ins=ins, detail=detail)
                row = conn.execute(select(_TABLE).where(_TABLE.c.id == document_id)).one()
        except BaseException:
            self.blobs.remove(blob.key)
            raise
        return rows.document(row)

    def _change(self, ins: str, document_id: int, action: str, values: dict[str, Any], *, actor: str,
                include_hidden: bool, audience: Audience = Audience.PATIENT) -> DocumentRecord:
        with self._writing() as conn:
            query = update(_TABLE).where(_TABLE.c.ins == ins, _TABLE.c.id == document_id)
            if not include_hidden:
                query = query.where(visible_to(audience))
            if conn.execute(query.values(**values).returning(_TABLE.c.id)).first() is None:
                raise DocumentNotFound(f"no document {document_id} in this dossier")
            self._audit(conn, actor=actor, action=action, ins=ins, detail={"document": document_id})
            row = conn.execute(select(_TABLE).where(_TABLE.c.id == document_id)).one()
        return rows.document(row)

    def set_masked(self, ins: str, document_id: int, masked: bool, *, actor: str,
                   audience: Audience = Audience.PATIENT) -> DocumentRecord:
        """Mask a document from professionals (MASQUE_PS), or show it to them again."""
        return self._change(ins, document_id, "mask" if masked else "unmask",
                            {"masked_from_professionals": masked}, actor=actor, include_hidden=False,
                            audience=audience)

    def withheld_attachments(self, ins: str, message_id: int, audience: Audience = Audience.PATIENT) -> set[int]:
        """Indexes of the message's attachments that carry a document hidden from ``audience``: they are
        neither listed, served nor exported to that audience. That is the attachment a hidden document was
        filed from and, when it came out of an IHE XDM archive, every archive of the message (the readable
        PDF sent beside the archive is the one filed, yet the archive holds the same document)."""
        hidden = select(_TABLE.c.attachment_index, _TABLE.c.xdm_unique_id).where(
            _TABLE.c.ins == ins, _TABLE.c.message == message_id, hidden_from(audience))
        attachments = BridgeAttachment.__table__
        with self._engine.connect() as conn:
            found = conn.execute(hidden).all()
            withheld = {int(index) for index, _ in found if index is not None}
            if any(unique_id is not None for _, unique_id in found):
                withheld |= set(conn.execute(select(attachments.c.idx).where(
                    attachments.c.ins == ins, attachments.c.message == message_id,
                    attachments.c.detected_type.in_(ARCHIVE_TYPES))).scalars())
        return withheld

    def release(self, ins: str, document_id: int, *, actor: str) -> DocumentRecord:
        """Show the patient a document that was invisible to them (after the announcement consultation)."""
        return self._change(ins, document_id, "release", {"hidden_from_patient": False}, actor=actor,
                            include_hidden=True)
