"""Files the patient sends (dossier uploads, reply attachments): formats told by content, size capped."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from aiohttp.web_request import FileField

from ..filing.filetypes import DetectedType, detect_type

UPLOAD_KINDS = frozenset({"pdf", "text", "rtf", "jpeg", "tiff", "png"})  # what Mon espace santé accepts
ACCEPT = ".pdf,.txt,.rtf,.jpg,.jpeg,.tif,.tiff,.png"  # the file inputs' hint; the content decides
FORMATS_FR = "PDF, texte (.txt), RTF, JPEG, TIFF ou PNG"


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes
    detected: DetectedType

    @property
    def stem(self) -> str:
        return PurePath(self.filename).stem or self.filename


class UploadRefused(ValueError):
    """A French sentence saying why the file is refused (the file's name is the patient's own)."""


def read_uploads(fields: list[Any], max_size: int) -> list[Upload]:
    """The non-empty files among form fields, each checked; UploadRefused for the first bad one."""
    uploads = []
    for item in fields:
        if not isinstance(item, FileField) or not item.filename:
            continue
        data = item.file.read(max_size + 1)
        name = PurePath(item.filename.replace("\\", "/")).name or "fichier"
        if not data:
            raise UploadRefused(f"Le fichier « {name} » est vide.")
        if len(data) > max_size:
            raise UploadRefused(f"Le fichier « {name} » dépasse {max_size // (1024 * 1024)} Mo.")
        detected = detect_type(data)
        if detected.kind not in UPLOAD_KINDS:
            raise UploadRefused(f"Le fichier « {name} » n'est pas accepté : formats possibles {FORMATS_FR}.")
        uploads.append(Upload(name, data, detected))
    return uploads
