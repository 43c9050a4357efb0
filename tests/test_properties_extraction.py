"""Property-based tests of the extraction parser, ``annuaire/extraction.py`` (Hypothesis).

Generated rows, written the ways sources write the file (LF or CRLF, a trailing '|', a BOM, as .txt or
inside the ANS ZIP), read back to the entries they describe; and a file of junk, or a damaged ZIP, only
ever gives the parser's own error (ValueError, which the CLI reports), never a traceback.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st
from support.extraction_data import header_line, row_line

from mssante_base.annuaire import BalKind
from mssante_operator.annuaire.extraction import RowError, open_extraction, read_extraction

TRUE_SPELLINGS = ("true", "1", "o", "oui", "y", "yes")
FALSE_SPELLINGS = ("false", "0", "n", "non", "no", "")


@dataclass(frozen=True)
class Row:
    kind: str
    address: str
    rpps: str
    structure_id: str
    service: str
    first_name: str
    last_name: str
    profession_code: str
    raison_sociale: str
    dematerialisation: str

    def line(self) -> str:
        return row_line(self.kind, self.address, self.rpps, self.structure_id, self.service, self.first_name,
                        self.last_name, self.profession_code, "", self.dematerialisation, self.raison_sociale)


def case(text: str) -> st.SearchStrategy[str]:
    return st.sampled_from([text, text.upper(), text.capitalize()])


field_text = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="|\u2028\u2029\x85"),
                     max_size=12).map(str.strip)
label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8).filter(
    lambda part: not part.startswith("-"))
local_part = st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyzéABCDEFGHIJKLMNOPQRSTUVWXYZÉ0123456789_-+",
                              min_size=1, max_size=8), min_size=1, max_size=3).map(".".join)
addresses = st.tuples(local_part, st.lists(label, min_size=2, max_size=3)).map(
    lambda parts: f"{parts[0]}@{'.'.join(parts[1])}")


@st.composite
def rows(draw: st.DrawFn) -> Row:
    kind = draw(st.sampled_from(["PER", "ORG", "APP", "CAB"]))
    digits = st.text(alphabet="0123456789", min_size=1, max_size=11)
    rpps = draw(digits) if kind == "PER" else draw(st.just("") | digits)
    structure_id = draw(digits) if kind in ("ORG", "APP") else draw(st.just("") | digits)
    profession_code = draw(st.sampled_from(["", "10", "21", "60"]))
    raison_sociale = draw(st.sampled_from(["", "Pharmacie du Centre", "PHARMACIE", "Pharmaciens sans frontières"])
                          | field_text)
    demat = draw(st.sampled_from(TRUE_SPELLINGS + FALSE_SPELLINGS).flatmap(case))
    return Row(draw(case(kind)), draw(addresses), rpps, structure_id, draw(field_text), draw(field_text),
               draw(field_text), profession_code, raison_sociale, demat)


def check(entry: object, row: Row) -> None:
    """The entry a row must give (an independent reading of the format's rules)."""
    assert not isinstance(entry, RowError), entry
    kind = BalKind(row.kind.upper())
    assert entry.address == row.address.lower()
    assert entry.kind is kind
    assert entry.rpps == (row.rpps or None)
    assert entry.structure_id == (row.structure_id or None)
    assert entry.service == (row.service or None)
    assert entry.profession_code == (row.profession_code or None)
    assert entry.dematerialisation is (row.dematerialisation.lower() in TRUE_SPELLINGS)
    if kind is BalKind.PER:
        name = " ".join(part for part in (row.first_name, row.last_name) if part)
        assert entry.display_name == (name or row.address.lower())
    else:
        assert entry.display_name == (row.service or row.raison_sociale or row.address.lower())
    pharmacy_name = row.raison_sociale.lower().startswith("pharmacie") and not row.raison_sociale[9:10].isalnum()
    assert entry.pharmacy is (kind is BalKind.ORG and (row.profession_code == "21" or pharmacy_name))


def write(folder: Path, text: str, *, zipped: bool) -> Path:
    if not zipped:
        path = folder / "extraction.txt"
        path.write_bytes(text.encode("utf-8"))
        return path
    path = folder / "extraction.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("Extraction_Correspondance_MSSante_202611210400.txt", text.encode("utf-8"))
    return path


def read_all(path: Path) -> list[object]:
    with open_extraction(path) as stream:
        return list(read_extraction(stream))


@settings(max_examples=150, deadline=None)
@given(st.lists(rows(), max_size=8), st.sampled_from(["\n", "\r\n"]), st.booleans(), st.booleans(), st.booleans())
def test_generated_rows_read_back_to_their_entries(found_rows: list[Row], end: str, trailing_bar: bool, bom: bool,
                                                   zipped: bool) -> None:
    suffix = "|" if trailing_bar else ""
    text = ("\ufeff" if bom else "") + "".join(line + suffix + end for line in
                                                [header_line(), *(row.line() for row in found_rows)])
    with tempfile.TemporaryDirectory() as folder:
        entries = read_all(write(Path(folder), text, zipped=zipped))
    assert len(entries) == len(found_rows)
    for entry, row in zip(entries, found_rows, strict=True):
        check(entry, row)


junk_lines = st.lists(
    st.one_of(
        st.text(max_size=60),
        st.lists(field_text, min_size=29, max_size=33).map("|".join),
        rows().map(lambda row: row.line().replace("@", "@@", 1)),
        st.just(header_line()),
    ),
    max_size=6,
).map(lambda lines: "\n".join(lines))


def only_own_errors(path: Path) -> None:
    """Reading the file gives entries and row errors, or a ValueError for the whole file; nothing else."""
    try:
        for item in read_all(path):
            assert isinstance(item, RowError) or item.address
    except ValueError:
        pass


@settings(max_examples=200, deadline=None)
@given(junk_lines | st.binary(max_size=200).map(lambda b: b.decode("latin-1")), st.booleans())
def test_junk_text_gives_only_the_parsers_errors(text: str, with_header: bool) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "extraction.txt"
        path.write_bytes(((header_line() + "\n") if with_header else "").encode() + text.encode("utf-8", "replace"))
        only_own_errors(path)


def valid_zip() -> bytes:
    text = "".join(line + "\n" for line in [header_line(), row_line(), row_line(address="b@hopital.test")] * 20)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("Extraction_Correspondance_MSSante_202611210400.txt", text)
    return buffer.getvalue()


VALID_ZIP = valid_zip()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(VALID_ZIP) - 1), st.integers(0, 255)), min_size=1, max_size=4),
       st.integers(0, len(VALID_ZIP)))
@example([(40, 0)], len(VALID_ZIP))  # a byte of the compressed member
@example([(0, 0)], 200)  # truncated: no central directory left
def test_damaged_zip_gives_only_the_parsers_errors(changes: list[tuple[int, int]], keep: int) -> None:
    damaged = bytearray(VALID_ZIP)
    for position, value in changes:
        damaged[position] = value
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "extraction.zip"
        tail = VALID_ZIP[-22:] if keep < len(damaged) else b""  # the end record: still looks like a ZIP
        path.write_bytes(bytes(damaged[:keep]) + tail)
        only_own_errors(path)
