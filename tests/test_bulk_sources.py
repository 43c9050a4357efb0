"""send-bulk's pure parts: listing a folder, reading the mapping, composing messages, the journal."""

from __future__ import annotations

import email
import hashlib
from datetime import UTC, datetime
from email.policy import default
from pathlib import Path

import pytest

from mssante_operator.bulk.compose import compose_report, message_id, prepare_eml
from mssante_operator.bulk.journal import Journal, JournalBusy, Outcome, RefusedRecipient
from mssante_operator.bulk.sources import SourceError, list_items
from mssante_operator.smtp.payload import dot_stuffed

APP = "labo-auto@hopital-demo.mssante.fr"
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 4


def write(folder: Path, name: str, data: bytes | str) -> Path:
    path = folder / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def test_eml_recipients_are_to_cc_and_bcc(tmp_path: Path) -> None:
    write(tmp_path, "b.eml", "From: x@a.fr\nTo: Dr A <a@h.fr>, b@h.fr\nCc: c@h.fr\nBcc: d@h.fr,\n A@H.fr\n\nx\n")
    write(tmp_path, "a.eml", "From: x@a.fr\r\nTo: e@h.fr\r\n\r\nx\r\n")
    write(tmp_path, "notes.txt", "ignored")
    items = list_items(tmp_path)
    assert [i.key for i in items] == ["a.eml", "b.eml"]
    assert items[1].recipients == ("a@h.fr", "b@h.fr", "c@h.fr", "d@h.fr")  # A@H.fr is a repeat
    assert items[1].sha256 == hashlib.sha256((tmp_path / "b.eml").read_bytes()).hexdigest()


def test_eml_without_recipient_or_folder_without_eml(tmp_path: Path) -> None:
    write(tmp_path, "r.pdf", PDF)
    with pytest.raises(SourceError, match="PDFs need --mapping"):
        list_items(tmp_path)
    write(tmp_path, "x.eml", "From: x@a.fr\nSubject: s\n\nx\n")
    with pytest.raises(SourceError, match=r"x\.eml: no recipient"):
        list_items(tmp_path)


@pytest.mark.parametrize("separator", [";", ","])
def test_mapping_with_either_separator(tmp_path: Path, separator: str) -> None:
    write(tmp_path, "r1.pdf", PDF)
    write(tmp_path, "Résultat é.pdf", PDF + b"2")
    rows = ["file;recipient;subject", "r1.pdf;a@h.fr;Résultats du 3 mars",
            '"Résultat é.pdf";a@h.fr | b@h.fr  c@h.fr;"Bilan, complet"']
    mapping = write(tmp_path, "map.csv", "\n".join(r.replace(";", separator) for r in rows) + "\n")
    items = list_items(tmp_path, mapping)
    assert [(i.key, i.recipients, i.subject) for i in items] == [
        ("r1.pdf", ("a@h.fr",), "Résultats du 3 mars"),
        ("Résultat é.pdf", ("a@h.fr", "b@h.fr", "c@h.fr"), "Bilan, complet"),
    ]


@pytest.mark.parametrize(("rows", "error"), [
    (["file;dest;subject"], "map.csv:1: header must be"),
    (["file;recipient;subject", "r1.pdf;a@h.fr;s", "", "absent.pdf;a@h.fr;s"], "map.csv:4: no file absent.pdf"),
    (["file;recipient;subject", "r1.pdf;a@h.fr;s", "r1.pdf;b@h.fr;s"], "map.csv:3: r1.pdf already mapped on line 2"),
    (["file;recipient;subject", "r1.pdf;pas une adresse;s"], "map.csv:2: invalid recipient address 'pas'"),
    (["file;recipient;subject", "r1.pdf; ;s"], "map.csv:2: no recipient"),
    (["file;recipient;subject", "r1.pdf;a@h.fr"], "map.csv:2: expected 3 columns"),
    (["file;recipient;subject", "../r1.pdf;a@h.fr;s"], "map.csv:2: file must be a plain file name"),
    (["file;recipient;subject", "r1.pdf;a@h.fr;"], "map.csv:2: empty subject"),
    (["file;recipient;subject"], "no row to send"),
])
def test_mapping_errors_name_the_line(tmp_path: Path, rows: list[str], error: str) -> None:
    write(tmp_path, "r1.pdf", PDF)
    mapping = write(tmp_path, "map.csv", "\n".join(rows) + "\n")
    with pytest.raises(SourceError, match=error.replace(".", r"\.")):
        list_items(tmp_path, mapping)


def test_mapping_must_be_utf8(tmp_path: Path) -> None:
    mapping = write(tmp_path, "map.csv", "file;recipient;subject\nr.pdf;a@h.fr;R\xe9sultats\n".encode("latin-1"))
    with pytest.raises(SourceError, match="not UTF-8"):
        list_items(tmp_path, mapping)


def test_composed_report() -> None:
    now = datetime(2026, 3, 3, 8, 30, tzinfo=UTC)
    raw = compose_report(sender=APP, recipients=("a@h.fr", "b@h.fr"), subject="Résultats de biologie",
                         file_name="Compte-rendu Émile.pdf", pdf=PDF, sha256="s1", now=now)
    assert b"\n" not in raw.replace(b"\r\n", b"") and raw.isascii()
    message = email.message_from_bytes(raw, policy=default)
    assert message["From"] == APP and message["To"] == "a@h.fr, b@h.fr"
    assert message["Subject"] == "Résultats de biologie"
    assert message["Date"].datetime == now
    assert message["MIME-Version"] == "1.0"
    assert message["Message-ID"] == message_id(APP, "Compte-rendu Émile.pdf", "s1")
    text = message.get_body(("plain",))
    assert text is not None and "Veuillez trouver ci-joint" in text.get_content()
    (attachment,) = message.iter_attachments()
    assert attachment.get_content_type() == "application/pdf"
    assert attachment["Content-Transfer-Encoding"] == "base64"
    assert b"filename*=utf-8''Compte-rendu%20%C3%89mile.pdf" in raw  # RFC 2231
    assert attachment.get_filename() == "Compte-rendu Émile.pdf"
    assert attachment.get_content() == PDF


def test_message_id_is_stable_and_specific() -> None:
    one = message_id(APP, "r1.pdf", "aaa")
    assert one == message_id(APP.upper(), "r1.pdf", "aaa")
    assert one.startswith("<") and one.endswith("@hopital-demo.mssante.fr>")
    assert len({one, message_id(APP, "r2.pdf", "aaa"), message_id(APP, "r1.pdf", "bbb"),
                message_id("autre@hopital-demo.mssante.fr", "r1.pdf", "aaa")}) == 4


def test_prepare_eml_drops_bcc_and_normalises_line_endings() -> None:
    raw = b"From: a@h.fr\nBcc: x@h.fr,\n\ty@h.fr\nTo: b@h.fr\nbcc: z@h.fr\n\nBcc: in the body stays\n.dot"
    assert prepare_eml(raw) == b"From: a@h.fr\r\nTo: b@h.fr\r\n\r\nBcc: in the body stays\r\n.dot\r\n"


def test_dot_stuffing() -> None:
    assert dot_stuffed(b".a\r\nb\n..c\r\n") == b"..a\r\nb\r\n...c\r\n.\r\n"
    assert dot_stuffed(b"x") == b"x\r\n.\r\n"


def test_journal_remembers_per_recipient_and_content(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        journal.record(Outcome("r1.pdf", "s1", ("A@h.fr",), (
            RefusedRecipient("b@h.fr", 550, "5.7.1", "outside", temporary=False),
            RefusedRecipient("c@h.fr", 451, "4.3.0", "later", temporary=True)), "Q1"))
        with pytest.raises(JournalBusy):
            Journal(tmp_path)
    with (tmp_path / ".send-bulk.journal").open("a") as handle:
        handle.write('{"key": "r2.pdf", "sha256": "s2", "accep')  # a run killed mid-write
    with Journal(tmp_path) as journal:
        assert journal.done("r1.pdf", "s1") == {"a@h.fr", "b@h.fr"}  # c@h.fr: temporary, to try again
        assert journal.done("r1.pdf", "changed") == set()
        assert journal.done("r2.pdf", "s2") == set()
        journal.record(Outcome("r1.pdf", "s1", ("c@h.fr",), (), "Q2"))
        assert journal.done("r1.pdf", "s1") == {"a@h.fr", "b@h.fr", "c@h.fr"}
