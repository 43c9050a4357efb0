"""The work items of a send-bulk folder: ready ``*.eml`` files, or PDFs named by a CSV mapping.

Pure apart from reading the folder: every problem is found before the first connection, with the
file and line that caused it, so a laboratory never half-sends a batch because of a typo in row 812.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import SMTP
from email.utils import getaddresses
from pathlib import Path

# Deliberately plain: an address of the trust space is ASCII local@domain (no SMTPUTF8 on submission).
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")
_SEPARATORS = re.compile(r"[\s|]+")
MAPPING_COLUMNS = ("file", "recipient", "subject")


class SourceError(ValueError):
    """The folder or the mapping cannot be sent as it is; the message names the file (and line)."""


@dataclass(frozen=True)
class WorkItem:
    """One message to send. ``key`` (the file name) and ``sha256`` (of the file) identify it in the journal."""

    key: str
    path: Path
    sha256: str
    recipients: tuple[str, ...]
    subject: str | None = None  # mapping items only; an .eml carries its own


def is_address(text: str) -> bool:
    return _ADDRESS.fullmatch(text) is not None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def list_items(folder: Path, mapping: Path | None = None) -> list[WorkItem]:
    """Every item of ``folder``: from ``mapping`` when given, else its ``*.eml`` files (sorted by name)."""
    if mapping is not None:
        return mapping_items(folder, mapping)
    emls = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".eml")
    if not emls:
        hint = " (PDFs need --mapping)" if any(p.suffix.lower() == ".pdf" for p in folder.iterdir()) else ""
        raise SourceError(f"{folder}: no .eml file to send{hint}")
    return [eml_item(path) for path in emls]


def eml_item(path: Path) -> WorkItem:
    """A ready message: its envelope recipients are the To, Cc and Bcc addresses."""
    raw = path.read_bytes()
    headers = BytesHeaderParser(policy=SMTP).parsebytes(raw)
    fields = [str(value) for name in ("To", "Cc", "Bcc") for value in headers.get_all(name, [])]
    recipients = _unique(address for _, address in getaddresses(fields) if address)
    if not recipients:
        raise SourceError(f"{path.name}: no recipient in To, Cc or Bcc")
    bad = [address for address in recipients if not is_address(address)]
    if bad:
        raise SourceError(f"{path.name}: invalid recipient address {bad[0]!r}")
    return WorkItem(path.name, path, hashlib.sha256(raw).hexdigest(), recipients)


def mapping_items(folder: Path, mapping: Path) -> list[WorkItem]:
    """Rows ``file;recipient;subject`` (or comma-separated); several recipients split by spaces or ``|``."""
    try:
        text = mapping.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{mapping.name}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    lines = text.splitlines()
    if not lines:
        raise SourceError(f"{mapping.name}: empty mapping")
    delimiter = ";" if lines[0].count(";") >= lines[0].count(",") else ","
    reader = csv.reader(lines, delimiter=delimiter)
    header = [cell.strip().lower() for cell in next(reader)]
    if tuple(header) != MAPPING_COLUMNS:
        raise SourceError(f"{mapping.name}:1: header must be {';'.join(MAPPING_COLUMNS)}, not {';'.join(header)}")
    items: list[WorkItem] = []
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        items.append(_mapped(folder, mapping.name, line, row, seen))
    if not items:
        raise SourceError(f"{mapping.name}: no row to send")
    return items


def _mapped(folder: Path, name: str, line: int, row: list[str], seen: dict[str, int]) -> WorkItem:
    where = f"{name}:{line}"
    if len(row) != len(MAPPING_COLUMNS):
        raise SourceError(f"{where}: expected {len(MAPPING_COLUMNS)} columns, found {len(row)}")
    file, recipient_text, subject = (cell.strip() for cell in row)
    if not file or Path(file).name != file:
        raise SourceError(f"{where}: file must be a plain file name in the folder, not {file!r}")
    if file in seen:
        raise SourceError(f"{where}: {file} already mapped on line {seen[file]}")
    seen[file] = line
    path = folder / file
    if not path.is_file():
        raise SourceError(f"{where}: no file {file} in {folder}")
    recipients = _unique(part for part in _SEPARATORS.split(recipient_text) if part)
    if not recipients:
        raise SourceError(f"{where}: no recipient")
    bad = [address for address in recipients if not is_address(address)]
    if bad:
        raise SourceError(f"{where}: invalid recipient address {bad[0]!r}")
    if not subject:
        raise SourceError(f"{where}: empty subject")
    return WorkItem(file, path, file_sha256(path), recipients, subject)


def _unique(addresses: Iterable[str]) -> tuple[str, ...]:
    """Addresses in first-seen order, without case-insensitive repeats (one RCPT per mailbox)."""
    result: dict[str, str] = {}
    for address in addresses:
        result.setdefault(address.lower(), address)
    return tuple(result.values())
