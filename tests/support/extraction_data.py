"""Builders of "Extraction Correspondance MSSanté" files for tests and benchmarks (all names are invented).

Everything streams: ``generated_rows`` is a generator and ``write_extraction`` writes line by line, so a
benchmark can produce 100,000 rows without building them in memory.
"""

from __future__ import annotations

import io
import unicodedata
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from mssante_operator.annuaire.extraction import COLUMN_COUNT, HEADER

DEFAULT_MEMBER = "Extraction_Correspondance_MSSante_202611210400.txt"
DEFAULT_ADDRESS = "camille.martin@hopital-test.mssante.fr"
DEFAULT_RPPS = "81012345678"
DEFAULT_STRUCTURE = "1750000012"
# Columns 20..30: postal address of the mailbox's structure.
STRUCTURE_ADDRESS = ("", "", "12", "", "R", "DE LA PAIX", "", "75001 PARIS", "75001", "75", "FRANCE")

_FIRST_NAMES = ("Camille", "Léa", "Hélène", "Jérôme", "François", "Zoé", "Noël", "Inès", "Théo", "Maël")
_LAST_NAMES = ("Martin", "Lefèvre", "Dubois", "Gérard", "Rousseau", "Mercier", "Faure", "Benoît", "Müller")
_PROFESSIONS = (("10", "Médecin"), ("60", "Infirmier"), ("40", "Chirurgien-Dentiste"), ("50", "Sage-Femme"))
_SERVICES = ("Cardiologie", "Urgences", "Radiologie", "Pédiatrie", "Secrétariat médical")


def header_line() -> str:
    """The header row, without line end."""
    return "|".join(HEADER)


def row_line(
    kind: str = "PER",
    address: str = DEFAULT_ADDRESS,
    rpps: str | None = None,
    structure_id: str | None = None,
    service: str = "",
    first_name: str = "",
    last_name: str = "",
    profession_code: str = "",
    profession_label: str = "",
    dematerialisation: str = "true",
    raison_sociale: str = "",
    enseigne: str = "",
    *,
    pp_identifier: str | None = None,
    overrides: Mapping[int, str] | None = None,
) -> str:
    """A full 31-field row, without line end.

    ``rpps`` fills "Identification nationale PP" (default: an RPPS for PER rows, empty otherwise) and
    ``pp_identifier`` "Identifiant PP" (default: same as ``rpps``); ``structure_id`` defaults to a FINESS
    for ORG and APP rows. ``overrides`` sets any column by 0-based position.
    """
    if rpps is None:
        rpps = DEFAULT_RPPS if kind == "PER" else ""
    if pp_identifier is None:
        pp_identifier = rpps
    if structure_id is None:
        structure_id = DEFAULT_STRUCTURE if kind in ("ORG", "APP") else ""
    fields = [
        kind,
        address,
        "8" if pp_identifier or rpps else "",
        pp_identifier,
        rpps,
        "1" if structure_id else "",
        structure_id,
        service,
        "M" if first_name or last_name else "",
        last_name,
        first_name,
        "C" if profession_code else "",
        "Civil" if profession_code else "",
        profession_code,
        profession_label,
        "",
        "",
        dematerialisation,
        raison_sociale,
        enseigne,
        *(STRUCTURE_ADDRESS if structure_id else ("",) * len(STRUCTURE_ADDRESS)),
    ]
    for position, value in (overrides or {}).items():
        fields[position] = value
    assert len(fields) == COLUMN_COUNT
    return "|".join(fields)


def _ascii(text: str) -> str:
    """The ASCII, lower-case form of a name, as used in address local parts."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower().replace(" ", "-")


def generated_row(index: int, domain: str = "hopital-bench.mssante.fr") -> str:
    """Row number ``index`` of :func:`generated_rows`: 1% pharmacies, 4% APP, 10% ORG, the rest PER."""
    bucket = index % 100
    if bucket == 0:
        return row_line(
            "ORG",
            f"pharmacie.{index}@{domain}",
            structure_id=f"1{750_000_000 + index % 9_973}",
            profession_code="21",
            profession_label="Pharmacien",
            raison_sociale=f"PHARMACIE DU CENTRE {index}",
            enseigne="Pharmacie du Centre",
        )
    if bucket < 5:
        return row_line(
            "APP",
            f"labo-resultats.{index}@{domain}",
            structure_id=f"1{750_000_000 + index % 997}",
            raison_sociale="Laboratoire de biologie médicale",
            dematerialisation="false",
        )
    if bucket < 15:
        service = _SERVICES[index % len(_SERVICES)]
        return row_line(
            "ORG",
            f"{_ascii(service)}.{index}@{domain}",
            structure_id=f"1{750_000_000 + index % 997}",
            service=service,
            raison_sociale="Centre hospitalier de Test",
        )
    first = _FIRST_NAMES[index % len(_FIRST_NAMES)]
    last = _LAST_NAMES[(index // len(_FIRST_NAMES)) % len(_LAST_NAMES)]
    code, label = _PROFESSIONS[index % len(_PROFESSIONS)]
    return row_line(
        "PER",
        f"{_ascii(first)}.{_ascii(last)}.{index}@{domain}",
        rpps=f"810{index:08d}",
        structure_id=f"1{750_000_000 + index % 997}" if index % 3 else "",
        first_name=first,
        last_name=last,
        profession_code=code,
        profession_label=label,
    )


def generated_rows(count: int, domain: str = "hopital-bench.mssante.fr") -> Iterator[str]:
    """``count`` deterministic rows with unique addresses (see :func:`generated_row`), produced lazily."""
    return (generated_row(index, domain) for index in range(count))


def write_extraction(
    path: Path,
    lines: Iterable[str],
    *,
    as_zip: bool = False,
    member: str = DEFAULT_MEMBER,
) -> Path:
    """Write the header then ``lines`` (given without line ends) as UTF-8 with ``\\n``; as a ZIP if asked."""
    if not as_zip:
        with path.open("w", encoding="utf-8", newline="\n") as text:
            _write_lines(text, lines)
        return path
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open(member, "w", force_zip64=True) as raw,
        io.TextIOWrapper(raw, encoding="utf-8", newline="\n") as text,
    ):
        _write_lines(text, lines)
    return path


def _write_lines(text: io.TextIOBase, lines: Iterable[str]) -> None:
    text.write(header_line() + "\n")
    for line in lines:
        text.write(line + "\n")
