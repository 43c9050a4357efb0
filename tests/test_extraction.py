"""The streaming parser of the public "Extraction Correspondance MSSanté"."""

from __future__ import annotations

import io
import itertools
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from support.extraction_data import (
    DEFAULT_ADDRESS,
    DEFAULT_MEMBER,
    DEFAULT_RPPS,
    DEFAULT_STRUCTURE,
    generated_rows,
    header_line,
    row_line,
    write_extraction,
)

from mssante_base.annuaire import ORIGIN_EXTRACTION, BalKind, MailboxEntry
from mssante_operator.annuaire.extraction import (
    COLUMN_COUNT,
    HEADER,
    RowError,
    entry_from_fields,
    open_extraction,
    read_extraction,
)


def parse(*lines: str, header: str | None = None) -> list[MailboxEntry | RowError]:
    """Parse a header and ``lines`` given as text (``\\n`` line ends)."""
    text = "\n".join([header_line() if header is None else header, *lines]) + "\n"
    return list(read_extraction(io.StringIO(text)))


def one(line: str) -> MailboxEntry | RowError:
    (item,) = parse(line)
    return item


def entry(line: str) -> MailboxEntry:
    item = one(line)
    assert isinstance(item, MailboxEntry), item
    return item


def error(line: str) -> RowError:
    item = one(line)
    assert isinstance(item, RowError), item
    return item


# --- header ------------------------------------------------------------------------------------------------


def test_header_constant_matches_column_count():
    assert len(HEADER) == COLUMN_COUNT == 31
    assert HEADER[:2] == ("Type de BAL", "Adresse BAL")


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Adresse BAL|Type de BAL|" + "|".join(HEADER[2:]),
        "|".join(HEADER[:30]),
        "|".join((*HEADER, "Extra")),
        "type_bal|adresse_bal|" + "|".join(HEADER[2:]),
    ],
    ids=["blank", "swapped", "30-columns", "32-columns", "other-names"],
)
def test_bad_header_is_refused(header):
    with pytest.raises(ValueError, match=r"header|empty"):
        parse(row_line(), header=header)


def test_empty_stream_is_refused():
    with pytest.raises(ValueError, match="no header"):
        read_extraction(io.StringIO(""))


def test_header_is_checked_when_read_extraction_is_called():
    """A wrong file fails before the caller iterates (and before it starts replacing entries)."""
    with pytest.raises(ValueError):
        read_extraction(io.StringIO("a|b|c\n"))


def test_header_suffix_variants_and_case_are_accepted():
    short = [name.removesuffix(" structure BAL") for name in HEADER]
    short[0], short[1] = "  TYPE DE BAL ", "adresse bal"
    items = parse(row_line(), header="|".join(short))
    assert isinstance(items[0], MailboxEntry)


def test_trailing_separator_on_every_line_is_tolerated():
    """Other ANS extractions end each line with '|'; the header tells the parser to expect it."""
    items = parse(row_line() + "|", row_line(address="x.y@a.mssante.fr"), header=header_line() + "|")
    assert [type(i) for i in items] == [MailboxEntry, MailboxEntry]


def test_trailing_separator_mode_still_counts_columns():
    items = parse(row_line() + "|x", header=header_line() + "|")
    assert items == [RowError(2, "expected 31 columns, found 32")]


def test_trailing_separator_is_not_tolerated_when_the_header_has_none():
    assert error(row_line() + "|").reason == "expected 31 columns, found 32"


# --- BAL types ------------------------------------------------------------------------------------------------


def test_per_row():
    item = entry(
        row_line(
            "PER",
            "Camille.MARTIN@Hopital-Test.mssante.fr",
            first_name="Camille",
            last_name="MARTIN",
            profession_code="10",
            profession_label="Médecin",
            service="Cardiologie",
            structure_id="1750000012",
        )
    )
    assert item == MailboxEntry(
        address="camille.martin@hopital-test.mssante.fr",
        kind=BalKind.PER,
        display_name="Camille MARTIN",
        rpps=DEFAULT_RPPS,
        structure_id="1750000012",
        service="Cardiologie",
        profession_code="10",
        profession_label="Médecin",
        liste_rouge=False,
        dematerialisation=True,
        pharmacy=False,
        delegates=(),
        origin=ORIGIN_EXTRACTION,
    )


def test_per_display_name_falls_back():
    assert entry(row_line(last_name="MARTIN")).display_name == "MARTIN"
    assert entry(row_line(first_name="Camille")).display_name == "Camille"
    assert entry(row_line()).display_name == DEFAULT_ADDRESS


def test_org_row():
    item = entry(row_line("ORG", "cardio@chu-test.mssante.fr", service=" Cardiologie ", raison_sociale="CHU Test"))
    assert item.kind is BalKind.ORG
    assert item.structure_id == DEFAULT_STRUCTURE
    assert item.rpps is None
    assert item.display_name == "Cardiologie"
    assert item.service == "Cardiologie"
    assert item.can_receive
    assert not item.pharmacy


def test_shared_mailbox_display_name_falls_back():
    assert entry(row_line("ORG", raison_sociale="CHU Test", enseigne="Le CHU")).display_name == "CHU Test"
    assert entry(row_line("ORG", enseigne="Le CHU")).display_name == "Le CHU"
    assert entry(row_line("ORG")).display_name == DEFAULT_ADDRESS


def test_app_row():
    item = entry(row_line("APP", "labo@labo-test.mssante.fr", raison_sociale="Labo Test"))
    assert item.kind is BalKind.APP
    assert item.structure_id == DEFAULT_STRUCTURE
    assert item.display_name == "Labo Test"
    assert not item.can_receive


def test_cab_row_needs_no_identifier():
    item = entry(row_line("cab", "cabinet@cab-test.mssante.fr", rpps="", structure_id=""))
    assert item.kind is BalKind.CAB
    assert item.rpps is None and item.structure_id is None


def test_unknown_bal_type():
    assert error(row_line("XYZ")).reason == "unknown BAL type 'XYZ'"
    assert error(row_line("")).reason == "unknown BAL type ''"


# --- identifiers -------------------------------------------------------------------------------------------


def test_pp_identifier_prefers_national_identifier():
    assert entry(row_line(rpps="810001234567", pp_identifier="10001234567")).rpps == "810001234567"


def test_pp_identifier_falls_back_to_identifiant_pp():
    assert entry(row_line(rpps="", pp_identifier=" 10001234567 ")).rpps == "10001234567"


def test_per_without_pp_identifier_is_an_error():
    assert error(row_line(rpps="", pp_identifier="")).reason == "PER mailbox without a PP identifier"


@pytest.mark.parametrize("kind", ["ORG", "APP"])
def test_structure_mailbox_without_structure_is_an_error(kind):
    assert error(row_line(kind, structure_id=" ")).reason == f"{kind} mailbox without a structure identifier"


# --- addresses ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "",
        "no-at-sign.mssante.fr",
        "two@@mssante.fr",
        "a@b@mssante.fr",
        "@mssante.fr",
        "camille@",
        "camille@localhost",
        "camille@mssante..fr",
        "camille@.mssante.fr",
        "camille@mssante.fr.",
        ".camille@mssante.fr",
        "cam..ille@mssante.fr",
        "cam ille@mssante.fr",
        "camille@mss\u00a0ante.fr",
        "*@mssante.fr",
        "cam*@mssante.fr",
        "camille(x)@mssante.fr",
        "<camille@mssante.fr>",
        'cam"ille@mssante.fr',
        "cam,ille@mssante.fr",
        "cam;ille@mssante.fr",
        "cam:ille@mssante.fr",
        "cam\\ille@mssante.fr",
        "camille@[127.0.0.1]",
        "cam\x00ille@mssante.fr",
        "cam\tille@mssante.fr",
        "cam\x7fille@mssante.fr",
        "cam\u200bille@mssante.fr",
        "cam\ufffdille@mssante.fr",
        "x" * 65 + "@mssante.fr",
        "x@" + "d" * 250 + ".fr",
    ],
)
def test_invalid_addresses_are_errors(address):
    reason = error(row_line(address=address)).reason
    assert reason.startswith("invalid mailbox address")


def test_invalid_address_reason_escapes_controls_and_holds_no_names():
    reason = error(row_line(address="cam\x00ille@mssante.fr", first_name="Hélène", last_name="SECRET")).reason
    assert reason == "invalid mailbox address 'cam\\x00ille@mssante.fr'"
    assert "\x00" not in reason


def test_errors_never_carry_names():
    rows = [
        row_line("XYZ", first_name="Hélène", last_name="SECRET"),
        row_line(rpps="", first_name="Hélène", last_name="SECRET"),
        row_line(dematerialisation="peut-être", first_name="Hélène", last_name="SECRET"),
        row_line(first_name="Hélène", last_name="SECRET") + "|extra",
    ]
    for item in parse(*rows):
        assert isinstance(item, RowError)
        assert "SECRET" not in item.reason and "Hélène" not in item.reason


def test_non_ascii_names_and_addresses():
    item = entry(row_line(address="Hélène.Müller@hôpital-test.mssante.fr", first_name="Hélène", last_name="MÜLLER"))
    assert item.address == "hélène.müller@hôpital-test.mssante.fr"
    assert item.display_name == "Hélène MÜLLER"


def test_address_is_stripped_and_lower_cased():
    assert entry(row_line(address="  Camille.Martin@MSSANTE.fr ")).address == "camille.martin@mssante.fr"


# --- flags -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("O", True),
        ("oui", True),
        ("Y", True),
        ("yes", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("N", False),
        ("non", False),
        ("no", False),
        ("", False),
        ("  ", False),
    ],
)
def test_dematerialisation_values(value, expected):
    assert entry(row_line(dematerialisation=value)).dematerialisation is expected


@pytest.mark.parametrize("value", ["2", "vrai", "maybe", "t"])
def test_bad_dematerialisation_is_an_error(value):
    assert error(row_line(dematerialisation=value)).reason == f"invalid Dématérialisation value {value!r}"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"profession_code": "21", "profession_label": "Pharmacien"}, True),
        ({"raison_sociale": "PHARMACIE DU CENTRE"}, True),
        ({"raison_sociale": "Pharmacie"}, True),
        ({"raison_sociale": "SELARL X", "enseigne": "pharmacie de la gare"}, True),
        ({"raison_sociale": "PHARMACÍE DES ÉCOLES"}, True),
        ({"raison_sociale": "  Pharmacie-Mercière"}, True),
        ({"raison_sociale": "GRANDE PHARMACIE DE LYON"}, False),
        ({"raison_sociale": "PHARMACIENS SANS FRONTIERES"}, False),
        ({"profession_code": "10", "raison_sociale": "CHU Test"}, False),
    ],
)
def test_pharmacy_detection(kwargs, expected):
    assert entry(row_line("ORG", "officine@pharma-test.mssante.fr", **kwargs)).pharmacy is expected


@pytest.mark.parametrize("kind", ["PER", "APP"])
def test_only_org_mailboxes_are_pharmacies(kind):
    line = row_line(kind, profession_code="21", raison_sociale="PHARMACIE DU CENTRE")
    assert entry(line).pharmacy is False


# --- lines -------------------------------------------------------------------------------------------------


def test_wrong_column_counts_report_physical_line_numbers():
    short = "|".join(row_line().split("|")[:30])
    items = parse(row_line(), short, "", row_line() + "|x", row_line(address="b@c.fr"))
    assert items[0] == entry(row_line())
    assert items[1] == RowError(3, "expected 31 columns, found 30")
    assert items[2] == RowError(5, "expected 31 columns, found 32")  # line 4 is blank
    assert isinstance(items[3], MailboxEntry)
    assert len(items) == 4


def test_row_error_line_numbers_count_every_physical_line():
    items = parse("", "   ", row_line(address="a@b.fr"), "", row_line("XYZ"))
    assert items[-1] == RowError(6, "unknown BAL type 'XYZ'")


def test_blank_lines_are_skipped():
    items = parse("", row_line(), "  ", "\t", row_line(address="b@c.fr"), "")
    assert [type(i) for i in items] == [MailboxEntry, MailboxEntry]


def test_entry_from_fields_checks_column_count():
    with pytest.raises(ValueError, match="expected 31 columns, found 2"):
        entry_from_fields(["PER", "a@b.fr"])
    assert entry_from_fields(row_line().split("|")).origin == ORIGIN_EXTRACTION


def test_empty_trailing_fields_are_kept():
    """Stripping a line must not eat the empty trailing columns (structure-less rows end with '||||')."""
    line = row_line(structure_id="")
    assert line.endswith("||||")
    assert isinstance(one(line), MailboxEntry)


def _bytes(*lines: str, line_end: str = "\n", bom: bool = False) -> bytes:
    data = line_end.join([header_line(), *lines]) + line_end
    return (b"\xef\xbb\xbf" if bom else b"") + data.encode("utf-8")


def _read_path(path: Path) -> list[MailboxEntry | RowError]:
    with open_extraction(path) as stream:
        return list(read_extraction(stream))


def test_crlf_line_ends(tmp_path):
    path = tmp_path / "crlf.txt"
    path.write_bytes(_bytes(row_line(structure_id=""), "", row_line("XYZ"), line_end="\r\n"))
    items = _read_path(path)
    assert items[0] == entry(row_line(structure_id=""))
    assert items[1] == RowError(4, "unknown BAL type 'XYZ'")


def test_crlf_in_a_plain_string_stream():
    text = header_line() + "\r\n" + row_line() + "\r\n"
    assert [type(i) for i in read_extraction(io.StringIO(text, newline=""))] == [MailboxEntry]


def test_stray_carriage_return_does_not_split_a_row(tmp_path):
    path = tmp_path / "cr.txt"
    path.write_bytes(_bytes(row_line(service="Cardio\rlogie")))
    (item,) = _read_path(path)
    assert isinstance(item, MailboxEntry)
    assert item.service == "Cardio\rlogie"


def test_bom_is_tolerated(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(_bytes(row_line(), bom=True))
    assert [type(i) for i in _read_path(path)] == [MailboxEntry]


def test_bom_in_an_already_decoded_stream_is_tolerated():
    items = list(read_extraction(io.StringIO("\ufeff" + header_line() + "\n" + row_line() + "\n")))
    assert [type(i) for i in items] == [MailboxEntry]


def test_undecodable_bytes_cost_one_row(tmp_path):
    path = tmp_path / "latin1.txt"
    good = row_line(first_name="Hélène").encode("utf-8")
    bad_name = row_line(first_name="H\xe9l\xe8ne").encode("latin-1")
    bad_address = row_line(address="h\xe9lene@mssante.fr").encode("latin-1")
    path.write_bytes(header_line().encode() + b"\n" + b"\n".join([good, bad_name, bad_address]) + b"\n")
    items = _read_path(path)
    assert items[0].display_name == "Hélène"
    assert items[1].display_name == "H\ufffdl\ufffdne"
    assert isinstance(items[2], RowError)
    assert items[2].reason.startswith("invalid mailbox address")


def test_text_file_written_by_helper(tmp_path):
    path = write_extraction(tmp_path / "plain.txt", [row_line(), row_line("ORG", "org@x.mssante.fr")])
    assert [i.kind for i in _read_path(path)] == [BalKind.PER, BalKind.ORG]


# --- ZIP ---------------------------------------------------------------------------------------------------


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_zip_with_the_named_member(tmp_path):
    path = write_extraction(tmp_path / "extraction.zip", [row_line()], as_zip=True)
    assert zipfile.ZipFile(path).namelist() == [DEFAULT_MEMBER]
    assert _read_path(path) == [entry(row_line())]


def test_zip_named_member_wins_over_other_txt(tmp_path):
    path = _zip(
        tmp_path / "e.zip",
        {
            "LISEZMOI.txt": b"not the data",
            "data/Extraction_Correspondance_MSSante_202601010400.txt": _bytes(row_line()),
            "notes.csv": b"x",
        },
    )
    assert _read_path(path) == [entry(row_line())]


def test_zip_with_one_other_txt(tmp_path):
    path = _zip(tmp_path / "e.zip", {"extraction.TXT": _bytes(row_line(), bom=True), "readme.md": b"x"})
    assert _read_path(path) == [entry(row_line())]


def test_zip_is_detected_by_content_not_name(tmp_path):
    path = write_extraction(tmp_path / "Extraction_Correspondance_MSSante", [row_line()], as_zip=True)
    assert _read_path(path) == [entry(row_line())]
    plain = write_extraction(tmp_path / "looks-like.zip", [row_line()])
    assert _read_path(plain) == [entry(row_line())]


@pytest.mark.parametrize(
    ("members", "match"),
    [
        ({}, "no .txt"),
        ({"readme.md": b"x", "folder.txt/": b""}, "no .txt"),
        ({"a.txt": b"x", "b.txt": b"y"}, "several"),
        (
            {
                "Extraction_Correspondance_MSSante_1.txt": b"x",
                "Extraction_Correspondance_MSSante_2.txt": b"y",
            },
            "several",
        ),
    ],
    ids=["empty", "no-txt", "two-txt", "two-named"],
)
def test_zip_without_a_single_candidate_is_refused(tmp_path, members, match):
    path = _zip(tmp_path / "e.zip", members)
    with pytest.raises(ValueError, match=match), open_extraction(path):
        pass


def test_zip_with_generated_rows(tmp_path):
    path = write_extraction(tmp_path / "bench.zip", generated_rows(2_000), as_zip=True)
    items = _read_path(path)
    assert len(items) == 2_000
    assert all(isinstance(i, MailboxEntry) for i in items)
    kinds = {kind: sum(1 for i in items if i.kind is kind) for kind in BalKind}
    assert kinds[BalKind.PER] > kinds[BalKind.ORG] > kinds[BalKind.APP] > 0
    assert sum(1 for i in items if i.pharmacy) == 20
    assert len({i.address for i in items}) == 2_000


# --- laziness ----------------------------------------------------------------------------------------------


class GeneratorStream(io.TextIOBase):
    """A text stream fed by a generator, counting how many lines have been pulled from it."""

    def __init__(self, lines: Iterable[str]) -> None:
        super().__init__()
        self._lines: Iterator[str] = iter(lines)
        self.pulled = 0

    def readable(self) -> bool:
        return True

    def readline(self, size: int | None = -1) -> str:
        line = next(self._lines, "")
        self.pulled += bool(line)
        return line

    def read(self, size: int | None = -1) -> str:
        raise AssertionError("the parser must read line by line, never the whole stream")


def test_read_extraction_is_lazy():
    count = 100_000
    stream = GeneratorStream(line + "\n" for line in itertools.chain([header_line()], generated_rows(count)))
    items = read_extraction(stream)
    assert stream.pulled == 1  # only the header so far
    seen = 0
    for seen, item in enumerate(items, start=1):
        assert isinstance(item, MailboxEntry)
        assert stream.pulled == seen + 1  # never more than the current row ahead
    assert seen == count


def test_generated_rows_are_deterministic_and_lazy():
    rows = generated_rows(10**9)
    assert isinstance(rows, Iterator)
    first = [next(rows) for _ in range(200)]
    assert first == list(generated_rows(200))
    assert all(len(line.split("|")) == COLUMN_COUNT for line in first)
