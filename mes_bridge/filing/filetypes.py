"""What a file is, from its bytes alone: a sender's file name or Content-Type is never trusted.

The dossier keeps only the formats Mon espace santé accepts (PDF, text, RTF, JPEG, TIFF, PNG and CDA R2
documents); HTML, SVG, archives, executables and other XML stay message attachments, because the web space
would otherwise serve active content under its own origin.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import PureWindowsPath
from xml.parsers import expat

import magic

from mssante_base.patients.xdm import XdmError, safe_parser

CDA_ROOT = "urn:hl7-org:v3}ClinicalDocument"  # expat's name with namespace_separator="}"
CDA_MIME = "text/xml"  # what XDM metadata declares for CDA R2 documents
SAFE_INLINE = frozenset({"application/pdf", "image/png", "image/jpeg", "text/plain"})

_KINDS = {
    "application/pdf": "pdf",
    "text/plain": "text",
    "text/rtf": "rtf",
    "application/rtf": "rtf",
    "image/jpeg": "jpeg",
    "image/tiff": "tiff",
    "image/png": "png",
}
# libmagic sometimes calls prose a programming language ("text/x-Algol68" for begin/end); these are still plain
# text and are served as text/plain. Markup and scripts a browser could run are not.
_ACTIVE_TEXT = frozenset({"text/html", "text/xml", "text/x-sgml", "text/xsl", "text/javascript", "text/x-php",
                          "text/x-xslt", "text/css", "text/vtt"})
_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f"\\/;:*?<>|]+')
MAX_NAME = 150  # characters of a file name handed out
_XML_LEAD = (b"<", b"\xef\xbb\xbf<")  # possibly after a UTF-8 byte order mark and white space


@dataclass(frozen=True)
class DetectedType:
    """A file's type as its content says: the MIME type to store and serve, and whether the dossier takes it."""

    mime_type: str
    kind: str  # "pdf", "text", "rtf", "jpeg", "tiff", "png", "cda" or "other"
    fileable: bool
    structured: bool  # a CDA R2 document

    @property
    def inline_safe(self) -> bool:
        """Whether a browser may show it inline (anything else is served as a download)."""
        return self.mime_type in SAFE_INLINE


def detect_type(data: bytes) -> DetectedType:
    """The type of ``data`` by python-magic on the content, with CDA R2 told apart from other XML."""
    mime = magic.from_buffer(data, mime=True) if data else "application/x-empty"
    if data.lstrip(b" \t\r\n").startswith(_XML_LEAD):
        root = xml_root(data)
        if root == CDA_ROOT:
            return DetectedType(CDA_MIME, "cda", True, True)
        if root is not None:  # well-formed XML that is no CDA (SVG, XHTML, metadata …): never filed
            return DetectedType(mime if mime != "text/plain" else "application/xml", "other", False, False)
    kind = _KINDS.get(mime)
    if kind is None and mime.startswith("text/x-") and mime not in _ACTIVE_TEXT:
        kind, mime = "text", "text/plain"
    if kind is None:
        return DetectedType(mime, "other", False, False)
    return DetectedType(mime if kind != "rtf" else "text/rtf", kind, True, False)


def is_cda(data: bytes) -> bool:
    """Whether ``data`` is a well-formed CDA R2 document (root ``{urn:hl7-org:v3}ClinicalDocument``)."""
    return xml_root(data) == CDA_ROOT


def xml_root(data: bytes) -> str | None:
    """The root element's ``namespace}local`` name of well-formed XML without DTD or entities, else None.

    The whole document is parsed (a truncated or forged file is not a CDA) but no tree is built.
    """
    parser = safe_parser("the document")
    names: list[str] = []

    def start(name: str, _attributes: dict[str, str]) -> None:
        if not names:
            names.append(name)

    parser.StartElementHandler = start
    try:
        parser.Parse(data, True)
    except (expat.ExpatError, XdmError, ValueError):
        return None
    return names[0] if names else None


def safe_filename(name: str | None, fallback: str) -> str:
    """A sender's or patient's file name made safe to hand out (Content-Disposition, a name in an export ZIP):
    its last path segment only ("C:\\x\\y.pdf" and "../y.pdf" alike), no quote, separator or control
    character, no leading or trailing dot or space, at most MAX_NAME characters (the extension kept);
    ``fallback`` if nothing is left."""
    base = PureWindowsPath(unicodedata.normalize("NFC", name or "").replace("\x00", "")).name
    cleaned = _UNSAFE_NAME.sub("_", base).strip(" ._")
    if len(cleaned) > MAX_NAME:  # cut the stem, keep a short extension
        stem, dot, suffix = cleaned.rpartition(".")
        keep = f"{dot}{suffix}" if stem and len(suffix) <= 10 else ""
        cleaned = cleaned[:MAX_NAME - len(keep)].rstrip(" .") + keep
    return cleaned or fallback
