"""``mssante-operator send-bulk`` from the command line, against the test submission server.

Covers what a laboratory relies on: the exit status, the refusal report, and that a second run
sends only what the first did not get accepted, with the same Message-ID.
"""

from __future__ import annotations

import csv
import email
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from test_bulk_sender import APP, CARDIO, DOCTOR, FakeSubmission, mailbox, new_kit

from mssante_operator.bulk.compose import message_id
from mssante_operator.bulk.sources import file_sha256
from mssante_operator.cli import main

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 8


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    return new_kit(tmp_path_factory)


def send_bulk(kit: tuple[Path, dict[str, Any]], fake: FakeSubmission, folder: Path, *extra: str) -> Result:
    home, manifest = kit
    app = mailbox(kit, APP)
    return CliRunner().invoke(main, [
        "send-bulk", str(folder), "--server", f"127.0.0.1:{fake.port}", "--tls", fake.tls,
        "--cert", str(home / app["cert"]), "--key", str(home / app["key"]), "--ca", str(home / manifest["trust_ca"]),
        "--from", APP, "--no-progress", *extra,
    ])


def lab_folder(tmp_path: Path, rows: list[str]) -> tuple[Path, Path]:
    folder = tmp_path / "out"
    folder.mkdir()
    for number in range(1, 4):
        (folder / f"cr-{number}.pdf").write_bytes(PDF + bytes([number]))
    mapping = folder / "mapping.csv"
    mapping.write_text("file;recipient;subject\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return folder, mapping


def report_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter=";"))


def test_mapping_run_reports_refusals_and_a_rerun_sends_nothing(kit: Any, tmp_path: Path) -> None:
    folder, mapping = lab_folder(tmp_path, [
        f"cr-1.pdf;{DOCTOR};Résultats de biologie",
        f"cr-2.pdf;{DOCTOR}|x@ailleurs.fr;Résultats",
        f"cr-3.pdf;{CARDIO} {DOCTOR};Résultats",
    ])
    with FakeSubmission(*kit) as fake:
        first = send_bulk(kit, fake, folder, "--mapping", str(mapping))
        assert first.exit_code == 1, first.output
        assert "accepted 2, skipped (already sent) 0, refused permanently 1, failed temporarily 0" in first.stdout
        assert report_rows(folder / "send-bulk-report.csv") == [{
            "file": "cr-2.pdf", "recipient": "x@ailleurs.fr", "code": "550", "enhanced_code": "5.7.1",
            "text": "Recipient outside the trust space", "kind": "permanent"}]
        assert sorted(r.rcpt_tos for r in fake.received) == [[CARDIO, DOCTOR], [DOCTOR], [DOCTOR]]
        received = {email.message_from_bytes(r.content, policy=default)["Message-ID"] for r in fake.received}
        assert received == {message_id(APP, f"cr-{n}.pdf", file_sha256(folder / f"cr-{n}.pdf")) for n in (1, 2, 3)}

        second = send_bulk(kit, fake, folder, "--mapping", str(mapping), "--report", str(tmp_path / "r2.csv"))
        assert second.exit_code == 0, second.output
        assert "accepted 0, skipped (already sent) 3" in second.stdout
        assert len(fake.received) == 3
        assert report_rows(tmp_path / "r2.csv") == []


def test_temporary_failure_exits_75_and_the_rerun_sends_only_the_rest(kit: Any, tmp_path: Path) -> None:
    folder, mapping = lab_folder(tmp_path, [f"cr-1.pdf;{DOCTOR} {CARDIO};Résultats", f"cr-2.pdf;{DOCTOR};R"])
    with FakeSubmission(*kit) as fake:
        fake.answer(f"RCPT {CARDIO}", "450 4.2.1 mailbox busy")
        first = send_bulk(kit, fake, folder, "--mapping", str(mapping), "--connections", "1")
        assert first.exit_code == 75, first.output
        assert "failed temporarily 1" in first.stdout
        assert [row["kind"] for row in report_rows(folder / "send-bulk-report.csv")] == ["temporary"]

        second = send_bulk(kit, fake, folder, "--mapping", str(mapping))
        assert second.exit_code == 0, second.output
        assert "accepted 1, skipped (already sent) 1" in second.stdout
        assert [r.rcpt_tos for r in fake.received] == [[DOCTOR], [DOCTOR], [CARDIO]]
        ids = [email.message_from_bytes(r.content, policy=default)["Message-ID"] for r in fake.received]
        assert ids[0] == ids[2]  # the same message, sent again to the recipient that was missing


def test_changed_file_is_sent_again(kit: Any, tmp_path: Path) -> None:
    folder, mapping = lab_folder(tmp_path, [f"cr-1.pdf;{DOCTOR};R"])
    with FakeSubmission(*kit) as fake:
        assert send_bulk(kit, fake, folder, "--mapping", str(mapping)).exit_code == 0
        (folder / "cr-1.pdf").write_bytes(PDF + b"corrected")
        assert send_bulk(kit, fake, folder, "--mapping", str(mapping)).exit_code == 0
        assert len(fake.received) == 2


def test_eml_folder_over_implicit_tls(kit: Any, tmp_path: Path) -> None:
    folder = tmp_path / "emls"
    folder.mkdir()
    (folder / "a.eml").write_bytes(
        f"From: {APP}\nTo: {DOCTOR}\nBcc: {CARDIO}\nSubject: s\nMessage-ID: <a@t>\n\ncorps\n".encode())
    with FakeSubmission(*kit, tls="implicit") as fake:
        result = send_bulk(kit, fake, folder)
        assert result.exit_code == 0, result.output
        (received,) = fake.received
        assert received.rcpt_tos == [DOCTOR, CARDIO]
        assert b"Bcc" not in received.content and received.content.startswith(f"From: {APP}\r\n".encode())


def test_bad_mapping_sends_nothing(kit: Any, tmp_path: Path) -> None:
    folder, mapping = lab_folder(tmp_path, [f"cr-1.pdf;{DOCTOR};R", "cr-9.pdf;a@h.fr;R"])
    with FakeSubmission(*kit) as fake:
        result = send_bulk(kit, fake, folder, "--mapping", str(mapping))
        assert result.exit_code == 65
        assert "mapping.csv:3: no file cr-9.pdf" in result.stderr
        assert fake.received == []


@pytest.mark.parametrize("server", ["127.0.0.1", "127.0.0.1:smtp"])
def test_server_must_be_host_and_port(kit: Any, tmp_path: Path, server: str) -> None:
    home, manifest = kit
    app = mailbox(kit, APP)
    result = CliRunner().invoke(main, [
        "send-bulk", str(tmp_path), "--server", server, "--cert", str(home / app["cert"]),
        "--key", str(home / app["key"]), "--ca", str(home / manifest["trust_ca"]), "--from", APP])
    assert result.exit_code == 2 and "HOST:PORT" in result.output
