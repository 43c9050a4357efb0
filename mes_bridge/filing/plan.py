"""What of a received message goes into the patient's dossier: a plan computed without any I/O.

Intake stores the message, then files the plan's documents; keeping the decision pure lets it be tested on
hand-made messages and timed alone. Rules (docs/ and the issue 7 spec):

* every attachment's type comes from its content; only the formats the dossier accepts are filed;
* an XDM archive (``IHE_XDM.ZIP``) is never filed itself: its documents are, with their metadata (title,
  author, category from typeCode/classCode, date, confidentiality); the archive must be about the recipient,
  else nothing of the message is filed and ``xdm_error`` says why (the sender gets an error MDN);
* a file sent twice (the readable PDF beside the archive's copy, or the same file attached twice) is filed
  once, with the archive's metadata and the outer attachment's index;
* the limits leave a too-big document, or those beyond the count or total, as attachments only.

Problems are short English sentences that name attachments by their index, never by name or content.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from mssante_base.patients import xdm

from ..store.records import NewDocument
from .categories import Category
from .filetypes import DetectedType, detect_type
from .loinc import category_for
from .mime import AttachmentPart, MessageView

MiB = 1024 * 1024
MASKED_FROM_PROFESSIONALS = "MASQUE_PS"
HIDDEN_FROM_PATIENT = "INVISIBLE_PATIENT"
HIDDEN_FROM_LEGAL_REPS = "INVISIBLE_REP_LEGAUX"
DEFAULT_TITLES = {
    "pdf": "Document PDF",
    "text": "Document texte",
    "rtf": "Document texte mis en forme",
    "jpeg": "Image",
    "png": "Image",
    "tiff": "Image",
    "cda": "Document médical structuré",
}
MAX_TITLE = 200


@dataclass(frozen=True)
class FilingLimits:
    """Caps on what one message may add to a dossier (the rest stays readable as attachments)."""

    max_document_size: int = 10 * MiB
    max_documents: int = 20
    max_total: int = 50 * MiB


@dataclass(frozen=True)
class FilingPlan:
    documents: tuple[NewDocument, ...]
    problems: tuple[str, ...]  # short English reasons, attachments named by index only
    xdm_error: str | None = None  # set: the message's XDM content is refused and nothing is filed


@dataclass(frozen=True)
class _Candidate:
    """A document to file before the limits, with where it came from for the problem sentences."""

    where: str
    document: NewDocument


def plan_filing(view: MessageView, ins: str, limits: FilingLimits = FilingLimits(), *,
                author_address: str, author_name: str) -> FilingPlan:
    """The documents of ``view`` to file in the dossier of ``ins`` (canonical INS), and what was left out."""
    problems: list[str] = []
    archives = [part for part in view.attachments if xdm.is_xdm_archive(part.filename, part.declared_type, part.data)]
    structured: dict[int, list[tuple[str, xdm.XdmDocument, str]]] = {}  # archive index -> (where, doc, sha256)
    for part in archives:
        try:
            package = xdm.read_xdm(part.data)
        except xdm.XdmError as exc:
            return FilingPlan((), (), f"attachment {part.index}: {exc}")
        error = _patient_error(package, ins)
        if error is not None:
            return FilingPlan((), (), f"attachment {part.index}: {error}")
        structured[part.index] = [
            (f"document {number} of the XDM attachment {part.index}", doc, hashlib.sha256(doc.data).hexdigest())
            for number, doc in enumerate(package.documents, start=1)
        ]
    by_hash = {digest: doc for docs in structured.values() for _, doc, digest in docs}
    outer_hashes = {part.sha256 for part in view.attachments if part.index not in structured}
    author = (author_address, author_name)
    candidates: list[_Candidate] = []
    seen: set[str] = set()
    for part in view.attachments:
        if part.index in structured:
            for where, doc, digest in structured[part.index]:
                if digest not in outer_hashes and digest not in seen:  # else filed at the outer attachment
                    seen.add(digest)
                    candidates.extend(_from_xdm(where, doc, detect_type(doc.data), None, None, author, problems))
            continue
        if part.sha256 in seen:
            continue
        seen.add(part.sha256)
        where = f"attachment {part.index}"
        twin = by_hash.get(part.sha256)
        if twin is not None:
            candidates.extend(_from_xdm(where, twin, part.detected, part.index, part.filename, author, problems))
        else:
            candidates.extend(_from_attachment(where, part, author, problems))
    return FilingPlan(_within_limits(candidates, limits, problems), tuple(problems))


def _patient_error(package: xdm.XdmPackage, ins: str) -> str | None:
    """Why the archive cannot go into this patient's dossier (another patient, or corrupt), else None."""
    for doc in package.documents:
        patient = doc.patient_id.ins if doc.patient_id is not None else None
        if patient is None or patient.value != ins.upper():
            return "the archive is about another patient than the recipient"
        if not doc.checks_out:
            return "a document of the archive does not match its declared size or hash"
    return None


def _from_xdm(where: str, doc: xdm.XdmDocument, detected: DetectedType, index: int | None, filename: str | None,
              author: tuple[str, str], problems: list[str]) -> list[_Candidate]:
    if not detected.fileable:
        problems.append(f"{where} is of a type the dossier does not take ({detected.mime_type})")
        return []
    levels = {code.code.upper() for code in doc.confidentiality}
    author_name = doc.author.display_name if doc.author is not None else author[1]
    return [_Candidate(where, NewDocument(
        data=doc.data,
        mime_type=detected.mime_type,
        title=_title(doc.title, filename or doc.uri, detected),
        category=category_for(doc.type_code.code if doc.type_code else None,
                              doc.class_code.code if doc.class_code else None),
        structured=detected.structured,
        filename=filename or doc.uri.rsplit("/", 1)[-1] or None,
        document_date=creation_time(doc.creation_time),
        author_address=author[0],
        author_name=author_name or author[1],
        masked_from_professionals=MASKED_FROM_PROFESSIONALS in levels,
        hidden_from_patient=HIDDEN_FROM_PATIENT in levels,
        hidden_from_legal_reps=HIDDEN_FROM_LEGAL_REPS in levels,
        attachment_index=index,
        xdm_unique_id=doc.unique_id,
    ))]


def _from_attachment(where: str, part: AttachmentPart, author: tuple[str, str],
                     problems: list[str]) -> list[_Candidate]:
    detected = part.detected
    if not detected.fileable:
        problems.append(f"{where} is of a type the dossier does not take ({detected.mime_type})")
        return []
    return [_Candidate(where, NewDocument(
        data=part.data,
        mime_type=detected.mime_type,
        title=_title("", part.filename, detected),
        category=Category.AUTR_DOC,
        structured=detected.structured,
        filename=part.filename,
        author_address=author[0],
        author_name=author[1],
        attachment_index=part.index,
    ))]


def _within_limits(candidates: list[_Candidate], limits: FilingLimits, problems: list[str]) -> tuple[NewDocument, ...]:
    kept: list[NewDocument] = []
    total = 0
    for candidate in candidates:
        size = len(candidate.document.data)
        document = candidate.document
        if document.hidden_from_patient or document.hidden_from_legal_reps:
            kept.append(document)  # only a filed document is kept from its readers: no limit leaves it out
            total += size
        elif size > limits.max_document_size:
            problems.append(f"{candidate.where} is larger than the {_size(limits.max_document_size)} a document "
                            "may have; left as an attachment")
        elif len(kept) >= limits.max_documents:
            problems.append(f"{candidate.where} is beyond the {limits.max_documents} documents filed per message; "
                            "left as an attachment")
        elif total + size > limits.max_total:
            problems.append(f"{candidate.where} would take the message beyond {_size(limits.max_total)} of "
                            "documents; left as an attachment")
        else:
            kept.append(candidate.document)
            total += size
    return tuple(kept)


def _title(title: str, filename: str | None, detected: DetectedType) -> str:
    """The XDM title, else the file name without its extension, else a French default for the type."""
    text = " ".join(title.split())
    if not text and filename:
        stem = filename.rsplit("/", 1)[-1]
        stem = stem.rsplit(".", 1)[0] if "." in stem[1:] else stem
        text = " ".join(stem.replace("_", " ").split())
    return (text or DEFAULT_TITLES.get(detected.kind, "Document"))[:MAX_TITLE]


def creation_time(value: str | None) -> datetime | None:
    """An XDS ``creationTime`` (UTC, ``YYYY[MM[DD[HH[MM[SS]]]]]``) as an aware datetime, None if unreadable."""
    text = (value or "").strip()
    if not text.isdigit() or len(text) < 4 or len(text) % 2:
        return None
    fields = [int(text[:4])] + [int(text[i:i + 2]) for i in range(4, min(len(text), 14), 2)]
    fields += [1, 1][: max(0, 3 - len(fields))]
    try:
        return datetime(*fields, tzinfo=UTC)
    except (TypeError, ValueError):
        return None


def _size(limit: int) -> str:
    return f"{limit // MiB} MiB" if limit >= MiB and limit % MiB == 0 else f"{limit} bytes"
