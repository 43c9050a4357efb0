"""send-bulk against a real running operator: its submission ports, its trust space, its store.

A laboratory's run is interrupted and resumed, a recipient outside the trust space is refused and
reported, and a From that is not the APP mailbox is refused; what was accepted lands in the
mailboxes once, even when a message is sent again with the same Message-ID.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from support.harness import RunningOperator

from mssante_operator.bulk.compose import message_id
from mssante_operator.bulk.journal import JOURNAL_FILE
from mssante_operator.bulk.sources import file_sha256
from mssante_operator.cli import main

APP = "labo-auto@hopital-demo.mssante.fr"
DOCTOR = "dr.martin@hopital-demo.mssante.fr"
SECRETARY = "ines.secretaire@hopital-demo.mssante.fr"
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40


def send_bulk(running: RunningOperator, folder: Path, *extra: str, listener: str = "submission",
              sender: str = APP) -> Result:
    app = running.mailbox(APP)
    home, port = running.home, running.port(listener)
    return CliRunner().invoke(main, [
        "send-bulk", str(folder), "--server", f"127.0.0.1:{port}",
        "--tls", "implicit" if listener == "submissions" else "starttls",
        "--cert", str(home / app["cert"]), "--key", str(home / app["key"]),
        "--ca", str(home / running.manifest["trust_ca"]), "--from", sender, "--no-progress", *extra,
    ])


def message_ids(running: RunningOperator, address: str) -> list[str]:
    listing = CliRunner().invoke(main, ["mailbox", "ls", address, "--home", str(running.home)])
    assert listing.exit_code == 0, listing.output
    return [json.loads(line)["message_id"] for line in listing.stdout.splitlines()]


def report_rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "send-bulk-report.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter=";"))


def reports(folder: Path, count: int, tag: str) -> None:
    folder.mkdir()
    for number in range(1, count + 1):
        (folder / f"{tag}-{number}.pdf").write_bytes(PDF + f"{tag}{number}".encode())


def write_mapping(folder: Path, rows: list[str]) -> Path:
    mapping = folder / "mapping.csv"
    mapping.write_text("file;recipient;subject\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return mapping


@pytest.mark.parametrize("listener", ["submission", "submissions"])
def test_interrupted_run_resumes_without_duplicates(running: RunningOperator, tmp_path: Path,
                                                    listener: str) -> None:
    folder = tmp_path / "lot"
    reports(folder, 6, listener)
    rows = [f"{listener}-{n}.pdf;{DOCTOR};Résultats de biologie n°{n}" for n in range(1, 7)]
    before = set(message_ids(running, DOCTOR))

    first = send_bulk(running, folder, "--mapping", str(write_mapping(folder, rows[:3])), listener=listener)
    assert first.exit_code == 0, first.output
    assert "accepted 3, skipped (already sent) 0" in first.stdout
    # A crash after the server's 250 and before the journal line: the last item is not journaled.
    journal = folder / JOURNAL_FILE
    lines = journal.read_text().splitlines(keepends=True)
    assert len(lines) == 3 and all(json.loads(line)["queue_id"] for line in lines)
    journal.write_text("".join(lines[:2]))

    second = send_bulk(running, folder, "--mapping", str(write_mapping(folder, rows)), "--connections", "2",
                       listener=listener)
    assert second.exit_code == 0, second.output
    assert "accepted 4, skipped (already sent) 2" in second.stdout

    expected = {message_id(APP, f"{listener}-{n}.pdf", file_sha256(folder / f"{listener}-{n}.pdf"))
                for n in range(1, 7)}
    new = [mid for mid in message_ids(running, DOCTOR) if mid not in before]
    assert sorted(new) == sorted(expected)  # the item sent twice is stored once


def test_refusals_are_reported(running: RunningOperator, tmp_path: Path) -> None:
    folder = tmp_path / "refus"
    reports(folder, 2, "refus")
    mapping = write_mapping(folder, [f"refus-1.pdf;{SECRETARY} patient@gmail.com;Résultats",
                                     "refus-2.pdf;quelquun@exemple.fr;Résultats"])
    result = send_bulk(running, folder, "--mapping", str(mapping))
    assert result.exit_code == 1, result.output
    assert "accepted 0, skipped (already sent) 0, refused permanently 2, failed temporarily 0" in result.stdout
    rows = report_rows(folder)
    assert [(r["file"], r["recipient"], r["code"], r["enhanced_code"], r["kind"]) for r in rows] == [
        ("refus-1.pdf", "patient@gmail.com", "550", "5.7.1", "permanent"),
        ("refus-2.pdf", "quelquun@exemple.fr", "550", "5.7.1", "permanent"),
    ]
    sha = file_sha256(folder / "refus-1.pdf")
    assert message_id(APP, "refus-1.pdf", sha) in message_ids(running, SECRETARY)  # the other recipient got it


def test_from_that_is_not_the_app_mailbox_is_refused(running: RunningOperator, tmp_path: Path) -> None:
    folder = tmp_path / "usurpation"
    folder.mkdir()
    (folder / "a.eml").write_bytes(
        f"From: {DOCTOR}\r\nTo: {SECRETARY}\r\nSubject: x\r\nMessage-ID: <usurpation@test>\r\n\r\ncorps\r\n".encode())
    result = send_bulk(running, folder)
    assert result.exit_code == 1, result.output
    (row,) = report_rows(folder)
    assert (row["recipient"], row["code"], row["enhanced_code"]) == (SECRETARY, "550", "5.7.1")

    envelope = tmp_path / "enveloppe"
    envelope.mkdir()
    (envelope / "b.eml").write_bytes((folder / "a.eml").read_bytes().replace(b"usurpation@", b"enveloppe@"))
    result = send_bulk(running, envelope, sender=DOCTOR)  # the APP certificate, another MAIL FROM
    assert result.exit_code == 1, result.output
    (row,) = report_rows(envelope)
    assert (row["recipient"], row["code"], row["enhanced_code"]) == (SECRETARY, "550", "5.7.1")
    assert "<usurpation@test>" not in message_ids(running, SECRETARY)
