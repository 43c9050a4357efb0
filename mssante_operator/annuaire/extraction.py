"""Streaming parser of the public "Extraction Correspondance MSSanté" (the national list of published mailboxes).

The ANS publishes it daily as a ZIP holding one ``|``-separated UTF-8 text file of ~90 MB (half a million rows).
Everything here reads one line at a time so an import never holds the file in memory, and it is pure: no
logging, no database. A malformed row does not stop the import: it comes out as a :class:`RowError` whose
reason names at most the row's address, never a person (the file is health data).
"""

from __future__ import annotations

import io
import unicodedata
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TextIO

from mssante_base.annuaire import ORIGIN_EXTRACTION, BalKind, MailboxEntry

COLUMN_COUNT = 31
HEADER: tuple[str, ...] = (
    "Type de BAL",
    "Adresse BAL",
    "Type Identifiant PP",
    "Identifiant PP",
    "Identification nationale PP",
    "Type identifiant structure",
    "Identification Structure",
    "Service de rattachement",
    "Civilité d'exercice",
    "Nom d'exercice",
    "Prénom d'exercice",
    "Catégorie profession",
    "Libellé de catégorie profession",
    "Code Profession",
    "Libellé Profession",
    "Code savoir-faire",
    "Libellé savoir-faire",
    "Dématérialisation",
    "Raison Sociale structure BAL",
    "Enseigne commerciale structure BAL",
    "L2COMPLEMENTLOCALISATION structure BAL",
    "L3COMPLEMENTDISTRIBUTION structure BAL",
    "L4NUMEROVOIE structure BAL",
    "L4COMPLEMENTNUMEROVOIE structure BAL",
    "NL4TYPEVOIE structure BAL",
    "L4LIBELLEVOIE structure BAL",
    "L5LIEUDITMENTION structure BAL",
    "L6LIGNEACHEMINEMENT structure BAL",
    "Code postal structure BAL",
    "Département structure BAL",
    "Pays structure BAL",
)

MEMBER_PREFIX = "extraction_correspondance_mssante_"  # compared case-insensitively with the ZIP member's name

# Column positions (0-based); the file is parsed by position since header suffixes vary between sources.
COL_KIND = 0
COL_ADDRESS = 1
COL_PP_ID = 3
COL_PP_NATIONAL = 4
COL_STRUCTURE = 6
COL_SERVICE = 7
COL_LAST_NAME = 9
COL_FIRST_NAME = 10
COL_PROFESSION_CODE = 13
COL_PROFESSION_LABEL = 14
COL_DEMATERIALISATION = 17
COL_RAISON_SOCIALE = 18
COL_ENSEIGNE = 19

PHARMACIST_PROFESSION_CODE = "21"
_TRUE = frozenset({"true", "1", "o", "oui", "y", "yes"})
_FALSE = frozenset({"false", "0", "n", "non", "no", ""})
# Specials of RFC 5322 plus '*' (a wildcard in LDAP filters and directory searches: never a published address).
_FORBIDDEN_IN_ADDRESS = frozenset('()<>,;:\\"[]*')
_MAX_ADDRESS_LENGTH = 254  # RFC 5321 path limit
_MAX_LOCAL_LENGTH = 64


@dataclass(frozen=True)
class RowError:
    """A row that could not be imported; ``line`` is the physical line number (header = 1)."""

    line: int
    reason: str


@contextmanager
def open_extraction(path: Path) -> Iterator[TextIO]:
    """Open the extraction (the ANS ZIP or its .txt, told apart by content) as a streamed text file.

    Decoding is UTF-8 with an optional BOM; undecodable bytes become U+FFFD so one bad byte costs one row
    (such an address is refused), not the whole import. Only ``\\n`` ends a line (``\\r\\n`` is handled by
    :func:`read_extraction`), so a stray ``\\r`` inside a field cannot split a row in two.
    """
    if not zipfile.is_zipfile(path):
        with path.open(encoding="utf-8-sig", errors="replace", newline="\n") as text:
            yield text
        return
    try:  # a damaged ZIP fails when opened or, its member being read lazily, in the middle of the import
        with zipfile.ZipFile(path) as archive:
            member = _pick_member(archive.namelist(), path)
            with (
                _open_member(archive, member) as raw,
                io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="\n") as text,
            ):
                yield text
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise ValueError(f"{path}: the ZIP is damaged or uses an unsupported format ({exc})") from exc


def _open_member(archive: zipfile.ZipFile, member: str) -> IO[bytes]:
    """The member's bytes; ValueError when it is encrypted (zipfile raises RuntimeError then)."""
    try:
        return archive.open(member)
    except RuntimeError as exc:
        raise ValueError(f"the ZIP member {member} is encrypted") from exc


def _pick_member(names: Iterable[str], path: Path) -> str:
    """The ZIP member to read: the one named like the ANS file, else the only .txt; ValueError otherwise."""
    texts = [name for name in names if not name.endswith("/") and name.lower().endswith(".txt")]
    named = [name for name in texts if PurePosixPath(name).name.lower().startswith(MEMBER_PREFIX)]
    candidates = named or texts
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ValueError(f"{path}: the ZIP holds no .txt file (expected Extraction_Correspondance_MSSante_*.txt)")
    raise ValueError(f"{path}: the ZIP holds several candidate .txt files ({', '.join(sorted(candidates))})")


def read_extraction(stream: TextIO) -> Iterator[MailboxEntry | RowError]:
    """Check the header now (ValueError: the whole file is unusable), then lazily yield one item per row.

    Good rows give a :class:`MailboxEntry`, malformed ones a :class:`RowError`; blank lines are skipped.
    The header is read eagerly so a wrong file fails before the caller starts replacing anything.
    """
    lines = enumerate(stream, start=1)
    trailing_separator = _read_header(lines)
    return _read_rows(lines, trailing_separator)


def _read_header(lines: Iterator[tuple[int, str]]) -> bool:
    """Validate the header row; return whether its lines end with a '|' (seen in other ANS extractions)."""
    for _number, raw in lines:
        line = _strip_line_end(raw).removeprefix("\ufeff")
        if line.strip():
            break
    else:
        raise ValueError("empty extraction: no header row")
    trailing_separator = line.rstrip().endswith("|") and line.count("|") == COLUMN_COUNT
    names = [name.strip() for name in _split(line, trailing_separator)]
    if len(names) != COLUMN_COUNT:
        raise ValueError(f"not an MSSanté extraction: header has {len(names)} columns, expected {COLUMN_COUNT}")
    for position in (COL_KIND, COL_ADDRESS):
        if names[position].casefold() != HEADER[position].casefold():
            raise ValueError(
                f"not an MSSanté extraction: header column {position + 1} is {names[position][:40]!r},"
                f" expected {HEADER[position]!r}"
            )
    return trailing_separator


def _read_rows(lines: Iterator[tuple[int, str]], trailing_separator: bool) -> Iterator[MailboxEntry | RowError]:
    """The data rows, one at a time, each an entry or an error carrying its line number."""
    for number, raw in lines:
        line = _strip_line_end(raw)
        if not line.strip():
            continue
        try:
            yield entry_from_fields(_split(line, trailing_separator))
        except ValueError as exc:
            yield RowError(number, str(exc))


def _strip_line_end(raw: str) -> str:
    """Drop ``\\n`` or ``\\r\\n`` and nothing else (trailing empty fields must survive)."""
    return raw.removesuffix("\n").removesuffix("\r")


def _split(line: str, trailing_separator: bool) -> list[str]:
    """Split on '|'; when the file ends its lines with a '|', drop the empty 32nd field this makes."""
    fields = line.split("|")
    if trailing_separator and len(fields) == COLUMN_COUNT + 1 and not fields[-1].strip():
        fields.pop()
    return fields


def entry_from_fields(fields: list[str]) -> MailboxEntry:
    """One split row -> an entry marked ORIGIN_EXTRACTION; ValueError(reason) when the row is malformed."""
    if len(fields) != COLUMN_COUNT:
        raise ValueError(f"expected {COLUMN_COUNT} columns, found {len(fields)}")
    row = [field.strip() for field in fields]
    kind = _kind(row[COL_KIND])
    address = _address(row[COL_ADDRESS])
    rpps = row[COL_PP_NATIONAL] or row[COL_PP_ID] or None
    structure_id = row[COL_STRUCTURE] or None
    if kind is BalKind.PER and rpps is None:
        raise ValueError("PER mailbox without a PP identifier")
    if kind in (BalKind.ORG, BalKind.APP) and structure_id is None:
        raise ValueError(f"{kind.value} mailbox without a structure identifier")
    return MailboxEntry(
        address=address,
        kind=kind,
        display_name=_display_name(kind, row, address),
        rpps=rpps,
        structure_id=structure_id,
        service=row[COL_SERVICE] or None,
        profession_code=row[COL_PROFESSION_CODE] or None,
        profession_label=row[COL_PROFESSION_LABEL] or None,
        liste_rouge=False,  # red-listed mailboxes are never in the public extraction
        dematerialisation=_dematerialisation(row[COL_DEMATERIALISATION]),
        pharmacy=_is_pharmacy(kind, row),
        delegates=(),
        origin=ORIGIN_EXTRACTION,
    )


def _kind(value: str) -> BalKind:
    """The BAL type; the value is a short code, so quoting a truncated copy of it discloses nothing."""
    try:
        return BalKind(value.upper())
    except ValueError:
        raise ValueError(f"unknown BAL type {value[:10]!r}") from None


def _address(value: str) -> str:
    """The lower-cased address, refused unless plausible: the directory key must be safe to match and search."""
    address = value.lower()
    if not is_plausible_address(address):
        raise ValueError(f"invalid mailbox address {address[:100]!r}")
    return address


def is_plausible_address(address: str) -> bool:
    """A single-'@' address with a dotted domain, no spaces, controls, specials or undecodable bytes."""
    if not address or len(address) > _MAX_ADDRESS_LENGTH or address.count("@") != 1:
        return False
    local, domain = address.split("@")
    if not local or len(local) > _MAX_LOCAL_LENGTH or "." not in domain:
        return False
    if local.startswith(".") or local.endswith(".") or ".." in local or "" in domain.split("."):
        return False
    return not any(_bad_address_char(char) for char in address)


def _bad_address_char(char: str) -> bool:
    """Whitespace, control/format/unassigned characters, RFC 5322 specials, '*' and U+FFFD (a decoding error)."""
    return (
        char.isspace()
        or char in _FORBIDDEN_IN_ADDRESS
        or char == "\ufffd"
        or unicodedata.category(char).startswith("C")
    )


def _display_name(kind: BalKind, row: list[str], address: str) -> str:
    """A person's "Prénom Nom" for PER; for shared mailboxes the most specific label the row carries."""
    if kind is BalKind.PER:
        return " ".join(part for part in (row[COL_FIRST_NAME], row[COL_LAST_NAME]) if part) or address
    return row[COL_SERVICE] or row[COL_RAISON_SOCIALE] or row[COL_ENSEIGNE] or address


def _dematerialisation(value: str) -> bool:
    """The flag in any of the spellings sources use; anything else is an error, not a silent default."""
    folded = value.casefold()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise ValueError(f"invalid Dématérialisation value {value[:10]!r}")


def _is_pharmacy(kind: BalKind, row: list[str]) -> bool:
    """An officine's ORG mailbox, which patients may write to first: pharmacist code or a "Pharmacie ..." name."""
    if kind is not BalKind.ORG:
        return False
    if row[COL_PROFESSION_CODE] == PHARMACIST_PROFESSION_CODE:
        return True
    return any(_starts_with_pharmacie(row[column]) for column in (COL_RAISON_SOCIALE, COL_ENSEIGNE))


def _starts_with_pharmacie(name: str) -> bool:
    """True for "PHARMACIE DU CENTRE" or "Pharmacíe", false for "Pharmaciens sans frontières"."""
    folded = _fold(name)
    return folded.startswith("pharmacie") and not folded[len("pharmacie") :][:1].isalnum()


def _fold(text: str) -> str:
    """Case- and accent-insensitive form of ``text``."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(char for char in decomposed if not unicodedata.combining(char))
