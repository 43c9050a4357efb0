"""The patient's export: one ZIP with every message (.eml), every document with its metadata, the history (JSON
and HTML) and a manifest of hashes, under the pages' visibility rules; from the store, the command line and
the web space, audited, and refused for a deleted space."""

from __future__ import annotations

import getpass
import hashlib
import io
import json
import os
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.bridge_kit import INS, make_bridge_home
from support.web_kit import LAB, PDF, WebSpace, deliver, mail, module_space, pdf_document

from mes_bridge.cli import main
from mes_bridge.export import ExportRefused, write_export
from mes_bridge.filing.categories import Category
from mes_bridge.filing.mime import WITHHELD_NOTICE, read_message, without_attachments
from mes_bridge.service import open_store
from mes_bridge.settings import load_bridge_settings
from mes_bridge.store import Audience, BridgeStore, MessageMeta, NewDocument, NewPatient
from mssante_base.patients.ins import validate_ins
from mssante_base.patients.states import PatientState

ACTIVE = validate_ins(INS["active"])
SECRET = PDF + b"secret-for-the-child-only"
HOSTILE = "../../../etc/passwd\\..\\boot.ini"


@pytest.fixture
def store(store_url: str, tmp_path: Path) -> Iterator[BridgeStore]:
    bridge_store = BridgeStore(store_url, tmp_path / "blobs")
    bridge_store.seed([NewPatient(ACTIVE, PatientState.ACTIVE, "Jeanne", "Martin", "$argon2id$x",
                                  email="jeanne@example.org")])
    yield bridge_store
    bridge_store.close()


def two_attachments() -> bytes:
    return mail(sender=LAB, name="Laboratoire Central", subject="Vos résultats", body="Voici vos résultats.",
                attachments=[("bilan.pdf", PDF + b"bilan", "application/pdf"),
                             ("consultation-ado.pdf", SECRET, "application/pdf")])


def document(title: str, data: bytes, **extra: object) -> NewDocument:
    return NewDocument(data=data, mime_type="application/pdf", title=title, category=Category.BIOLOGIE,
                       author_address=LAB, author_name="Laboratoire Central", **extra)  # type: ignore[arg-type]


def seed_space(store: BridgeStore) -> int:
    """A message with a document for everyone and one hidden from representatives; one hidden from the
    patient; a reply; an upload with a hostile file name. The message's row id."""
    message = deliver(store, "active", two_attachments(), documents=[
        document("Bilan sanguin", PDF + b"bilan", filename="bilan.pdf", attachment_index=0),
        document("Consultation confidentielle", SECRET, filename="consultation-ado.pdf", attachment_index=1,
                 hidden_from_legal_reps=True)])
    deliver(store, "active", mail(sender=LAB, subject="Annonce"),
            documents=[pdf_document("Annonce en attente", hidden_from_patient=True)])
    store.record_sent(mail(sender=ACTIVE.address, subject="Merci", to=LAB), ACTIVE,
                      MessageMeta("<merci@patient>", ACTIVE.address, (LAB,), "Merci", from_address=ACTIVE.address),
                      actor=f"patient:{ACTIVE.value}")
    store.file_document(ACTIVE.value, NewDocument(data=b"mes notes\n", mime_type="text/plain", title="Mes notes",
                                                  category=Category.AUTR_DOC, filename=HOSTILE),
                        actor=f"patient:{ACTIVE.value}")
    return message


def export(store: BridgeStore, audience: Audience) -> zipfile.ZipFile:
    out = io.BytesIO()
    write_export(store, ACTIVE.value, audience, out, actor="operator:test")
    return zipfile.ZipFile(io.BytesIO(out.getvalue()))


def everything(archive: zipfile.ZipFile) -> bytes:
    return b"".join(archive.read(name) for name in archive.namelist())


def test_without_attachments_replaces_the_withheld_parts_and_keeps_the_numbering() -> None:
    raw = two_attachments()
    assert without_attachments(raw, set()) == raw
    kept = without_attachments(raw, {1})
    view = read_message(kept)
    assert view.text_body.strip() == "Voici vos résultats." and view.subject == "Vos résultats"
    first, second = view.attachments
    assert first.data == PDF + b"bilan" and first.filename == "bilan.pdf"
    assert second.data.decode().strip() == WITHHELD_NOTICE and second.filename != "consultation-ado.pdf"
    assert b"consultation-ado" not in kept and SECRET not in kept
    assert read_message(without_attachments(raw, {0, 1, 7})).attachments[0].data.decode().strip() == WITHHELD_NOTICE


def test_the_zip_holds_everything_the_patient_sees_with_verified_hashes(store: BridgeStore) -> None:
    seed_space(store)
    archive = export(store, Audience.PATIENT)
    names = archive.namelist()
    assert [name for name in names if name.startswith("messages/")] == [
        "messages/0001-in.eml", "messages/0002-in.eml", "messages/0003-in.eml", "messages/0004-out.eml"]
    assert b"Bienvenue dans votre messagerie" in archive.read("messages/0001-in.eml")
    assert read_message(archive.read("messages/0002-in.eml")).attachments[1].data == SECRET
    documents = sorted(name for name in names if name.startswith("documents/") and name.endswith(".json"))
    metadata = [json.loads(archive.read(name)) for name in documents]
    assert [item["title"] for item in metadata] == ["Bilan sanguin", "Consultation confidentielle", "Mes notes"]
    bilan = metadata[0]
    assert bilan["category"] == {"code": "BIOLOGIE", "label": "Résultats de biologie"}
    assert bilan["source_message"]["file"] == "messages/0002-in.eml" and bilan["deposited_by"] == LAB
    assert archive.read(bilan["file"]) == PDF + b"bilan"
    assert hashlib.sha256(archive.read(bilan["file"])).hexdigest() == bilan["sha256"]
    for name in names:  # no traversal, no absolute path, no odd character
        assert not name.startswith("/") and ".." not in name and "\\" not in name, name
    assert metadata[2]["file"].startswith("documents/0003-") and "passwd" not in metadata[2]["file"]
    assert "boot.ini" in metadata[2]["file"]
    assert b"Annonce en attente" not in everything(archive)  # INVISIBLE_PATIENT: not for the patient
    history = json.loads(archive.read("historique.json"))
    assert [entry["id"] for entry in history] == sorted(entry["id"] for entry in history)
    assert {"id", "at", "actor", "action", "detail", "hash"} <= set(history[0])
    page = archive.read("historique.html").decode()
    assert "Laboratoire Central a déposé le document « Bilan sanguin »" in page and "<script" not in page
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["ins"] == ACTIVE.value and manifest["audience"] == "patient"
    listed = {item["path"]: item for item in manifest["files"]}
    assert set(listed) == set(names) - {"manifest.json"}
    for path, item in listed.items():
        data = archive.read(path)
        assert (len(data), hashlib.sha256(data).hexdigest()) == (item["size"], item["sha256"]), path
    (audit,) = [entry for entry in store.audit(ACTIVE) if entry.action == "export"]
    assert audit.actor == "operator:test"
    assert audit.detail == {"audience": "patient", "messages": 4, "documents": 3, "history": len(history)}


def test_a_document_hidden_from_representatives_is_in_no_file_of_their_export(store: BridgeStore) -> None:
    seed_space(store)
    patient = export(store, Audience.PATIENT)
    assert b"Consultation confidentielle" in everything(patient)
    representative = export(store, Audience.REPRESENTATIVE)
    names = representative.namelist()
    assert not any("consultation" in name for name in names)
    titles = [json.loads(representative.read(name))["title"] for name in names
              if name.startswith("documents/") and name.endswith(".json")]
    assert titles == ["Bilan sanguin", "Mes notes"]
    assert "Consultation confidentielle" not in representative.read("historique.json").decode()
    assert "Consultation confidentielle" not in representative.read("historique.html").decode()
    assert b"Consultation confidentielle" not in everything(representative)
    eml = representative.read("messages/0002-in.eml")
    assert b"consultation-ado" not in eml and SECRET not in eml
    parts = read_message(eml).attachments
    assert parts[0].data == PDF + b"bilan" and parts[1].data.decode().strip() == WITHHELD_NOTICE
    assert SECRET not in everything(representative)
    assert json.loads(representative.read("manifest.json"))["audience"] == "representative"


def test_a_deleted_space_cannot_be_exported(store: BridgeStore) -> None:
    seed_space(store)
    store.delete_space(ACTIVE, actor="operator:support")
    with pytest.raises(ExportRefused, match="deleted"):
        write_export(store, ACTIVE.value, Audience.PATIENT, io.BytesIO(), actor="operator:test")
    assert "export" not in [entry.action for entry in store.audit(ACTIVE)]


def cli(home: Path, *args: str) -> tuple[int, list[dict], str]:
    result = CliRunner().invoke(main, [*args, "--home", str(home)])
    return result.exit_code, [json.loads(line) for line in result.output.splitlines() if line.startswith("{")], \
        result.output


def test_the_command_writes_a_private_zip_refuses_to_overwrite_and_audits(tmp_path: Path) -> None:
    home = make_bridge_home(tmp_path / "home")["home"]
    cli(home, "patients", "ls")  # seeds patients.json
    store = open_store(load_bridge_settings(home))
    try:
        deliver(store, "active", two_attachments(), documents=[pdf_document("Bilan sanguin", attachment_index=0)])
    finally:
        store.close()
    out = tmp_path / "export.zip"
    code, (line,), _ = cli(home, "patient", "export", ACTIVE.value, "--out", str(out), "--by", "alice")
    assert code == 0 and line["path"] == str(out) and (line["messages"], line["documents"]) == (2, 1)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert line["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert "manifest.json" in zipfile.ZipFile(out).namelist()
    code, _, output = cli(home, "patient", "export", ACTIVE.value, "--out", str(out))
    assert code == 1 and "exists" in output
    assert cli(home, "patient", "export", ACTIVE.value, "--out", str(out), "--force")[0] == 0
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]  # no temporary file left
    _, entries, _ = cli(home, "audit", "ls", ACTIVE.value)
    exports = [entry for entry in entries if entry["action"] == "export"]
    assert [entry["actor"] for entry in exports] == ["operator:alice", f"operator:{getpass.getuser()}"]
    assert cli(home, "patient", "delete", ACTIVE.value, "--by", "support")[0] == 0
    code, _, output = cli(home, "patient", "export", ACTIVE.value, "--out", str(tmp_path / "again.zip"))
    assert code == 1 and "deleted" in output and not (tmp_path / "again.zip").exists()


space = module_space()


def test_the_web_page_downloads_the_zip_and_is_audited(space: WebSpace) -> None:
    scan = PDF + os.urandom(700_000)  # incompressible: the ZIP is streamed in several chunks
    deliver(space.store, "active", mail(sender=LAB, subject="Vos résultats"),
            documents=[pdf_document("Bilan"), document("Scanner", scan, filename="scanner.pdf")])
    browser = space.logged_in()
    page = browser.get("/mes-donnees")
    assert page.status == 200 and "Télécharger toutes mes données" in page.text
    assert 'href="/mes-donnees"' in page.html and 'action="/mes-donnees/telecharger"' in page.html
    assert browser.post("/mes-donnees/telecharger", csrf=None).status == 403
    download = browser.post("/mes-donnees/telecharger")
    assert download.status == 200 and download.headers["Content-Type"] == "application/zip"
    assert download.headers["Content-Disposition"].startswith("attachment;")
    assert download.headers["Cache-Control"] == "no-store" and "Content-Security-Policy" in download.headers
    archive = zipfile.ZipFile(io.BytesIO(download.body))
    assert "manifest.json" in archive.namelist() and b"Bilan" in everything(archive)
    assert archive.read("documents/0002-scanner.pdf") == scan
    (audit,) = [entry for entry in space.store.history(INS["active"], limit=None) if entry.action == "export"]
    assert audit.actor == f"patient:{INS['active']}" and audit.detail["documents"] == 2
    assert "Vous avez téléchargé toutes les données de l'espace." in browser.get("/historique").text


def test_a_representative_s_export_names_them_vous_and_the_child_by_their_role(store: BridgeStore) -> None:
    seed_space(store)
    parent = "285077512345655"
    store.audit_event(ACTIVE.value, "view-message", actor=f"representative:{parent}", detail={"message": 2})
    out = io.BytesIO()
    write_export(store, ACTIVE.value, Audience.REPRESENTATIVE, out, actor=f"representative:{parent}", viewer=parent)
    page = zipfile.ZipFile(out).read("historique.html").decode()
    assert "Vous avez lu" in page  # the parent's own reading
    assert "Le titulaire de l&#x27;espace a enregistré" in page  # the child's own filing, not "Vous"
