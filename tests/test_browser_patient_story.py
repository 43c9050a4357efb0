"""The patient's story end to end, in Debian's headless Chromium, on a served demo kit.

``mssante-operator serve`` runs a fresh kit as a child process. Dr Martin (a PER mailbox) sends the
active patient a lab report (text, PDF, IHE_XDM.ZIP, read receipt asked) and a prescription (PDF and a
photo) through the operator's submission listener. The patient logs in with the one-time code of the
notification outbox, reads, opens, downloads and files, reads the history and answers; the doctor's
INBOX gets the answer and the read receipt; the doctor ends the exchange and the answer is then closed.
The kit files one document per message at most, so that the photo is left for the patient to file.
Then Sophie activates her daughter Léa's space (the kit's child, her code from demo.json), the doctor
writes to Léa, and Sophie reads Léa's report in Léa's space without seeing a document hidden from legal
representatives; last, Sophie downloads all her data and deletes her space.
The tests run in order and share the kit and two signed-in pages (phone, desktop).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email import message_from_bytes
from email.policy import default
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from playwright.sync_api import Browser, Page, expect
from support.browser import horizontal_overflow, open_page, page_problems
from support.browser_story import (
    LAB_SUBJECT,
    LAB_TITLE,
    Kit,
    doctor_message,
    doctor_sends,
    inbox_of,
    lab_pdf,
    lab_report,
    red_share,
    sign_in,
    wait_until,
)
from support.filing_samples import pdf, png
from support.harness import make_kit, serve_process, wait_for_port

PRESCRIPTION_SUBJECT = "Votre ordonnance"
PHOTO = "ordonnance-photo.png"
FIN_SUBJECT = "Fin de notre échange"


@dataclass
class Story:
    """The served kit and what the doctor sent."""

    kit: Kit
    doctor: dict[str, Any]
    report: bytes


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    home = tmp_path_factory.mktemp("story") / "home"
    manifest = make_kit(home, bridge={"max_documents_per_message": 1})
    with serve_process(home, manifest):
        web = manifest["listeners"]["web"]
        wait_for_port(web["host"], web["port"])
        kit = Kit(home, manifest)
        doctor, report = kit.mailbox("dr.martin"), lab_pdf()
        doctor_sends(kit, doctor, lab_report(kit, doctor, report))
        doctor_sends(kit, doctor, doctor_message(
            kit, doctor, PRESCRIPTION_SUBJECT, "Bonjour,\nVoici votre ordonnance et la photo demandée.\n",
            attachments=(("ordonnance.pdf", "application/pdf", pdf("Ordonnance")), (PHOTO, "image/png", png()))))
        yield Story(kit, doctor, report)


@pytest.fixture(scope="module")
def browser_trust(story: Story) -> list[x509.Certificate]:
    """The web space presents the bridge's certificate: trust its chain only."""
    return story.kit.web_certificates()


@dataclass
class Visit:
    """A signed-in page and the console errors / CSP violations seen on it so far."""

    page: Page
    problems: list[str]
    url: str

    def go(self, path: str) -> None:
        self.page.goto(self.url + path)


def _visit(chromium: Browser, story: Story, viewport: str, check: Callable[[Page], object]) -> Iterator[Visit]:
    page = open_page(chromium, viewport)
    visit = Visit(page, page_problems(page), story.kit.url)
    sign_in(page, story.kit, on_login_page=check)
    yield visit
    page.context.close()


def _fits(page: Page) -> None:
    assert horizontal_overflow(page) == 0, f"{page.url} scrolls sideways at phone width"


@pytest.fixture(scope="module")
def phone(chromium: Browser, story: Story) -> Iterator[Visit]:
    yield from _visit(chromium, story, "phone", _fits)


@pytest.fixture(scope="module")
def desktop(chromium: Browser, story: Story) -> Iterator[Visit]:
    yield from _visit(chromium, story, "desktop", lambda page: None)


def test_phone_reads_the_report_and_downloads_the_filed_document(phone: Visit, story: Story, tmp_path: Path) -> None:
    page = phone.page
    lab = page.locator("ul.messages li", has_text=LAB_SUBJECT)
    assert "unread" in (lab.get_attribute("class") or "") and lab.locator(".tag").text_content() == "Non lu"
    _fits(page)

    lab.get_by_role("link").click()
    assert page.get_by_role("heading", level=1).inner_text() == LAB_SUBJECT
    assert "Voici les résultats de votre bilan sanguin" in page.locator(".body").inner_text()
    attachments = page.locator("ul.attachments > li")
    names = attachments.locator(".name").all_inner_texts()
    assert len(names) == 2 and names[0].startswith("bilan.pdf") and names[1].startswith("IHE_XDM.ZIP")
    assert attachments.first.get_by_role("link", name="Voir dans mes documents").count() == 1
    _fits(page)

    phone.go("/")
    assert "unread" not in (page.locator("ul.messages li", has_text=LAB_SUBJECT).get_attribute("class") or "")

    phone.go("/documents")
    category = page.get_by_role("navigation", name="Catégories").get_by_role("link", name="Résultats de biologie")
    assert category.locator(".count").inner_text() == "1"
    category.click()
    assert page.url.endswith("/documents?categorie=BIOLOGIE")
    assert page.locator("ul.documents li").all_inner_texts()[0].startswith(LAB_TITLE)
    _fits(page)
    page.get_by_role("link", name=LAB_TITLE).click()
    assert page.get_by_role("heading", level=1).inner_text() == LAB_TITLE
    assert "Résultats de biologie" in page.locator("dl.headers").inner_text()
    _fits(page)
    with page.expect_download() as download:
        page.get_by_role("link", name="Télécharger").click()
    saved = tmp_path / "bilan.pdf"
    download.value.save_as(saved)
    assert saved.read_bytes() == story.report
    assert phone.problems == []


def test_pdf_opened_inline_is_shown_by_the_viewer(desktop: Visit, new_page: Callable[..., Page]) -> None:
    """Served content carries ``Content-Security-Policy: sandbox``; Chromium's PDF viewer still draws it."""
    page = desktop.page
    desktop.go("/documents")
    page.get_by_role("link", name=LAB_TITLE).click()
    scratch = new_page()
    assert red_share(scratch, page.screenshot()) < 0.001  # the measure: nothing red on our own pages
    with page.expect_response(lambda response: response.url.endswith("/contenu")) as served:
        page.get_by_role("link", name="Ouvrir").click()
    headers = served.value.all_headers()
    assert headers["content-type"] == "application/pdf" and headers["x-content-type-options"] == "nosniff"
    assert headers["content-disposition"].startswith("inline;")
    assert headers["content-security-policy"].startswith("sandbox")  # inert, and yet displayed
    shares: list[float] = []

    def drawn() -> bool:  # the viewer paints the page a moment after the load event
        shares.append(red_share(scratch, page.screenshot()))
        return shares[-1] > 0.05

    wait_until(drawn, "the PDF drawn by Chromium's viewer", timeout=10, step=0.3)
    assert desktop.problems == []


def test_desktop_files_an_attachment_and_reads_the_history(desktop: Visit) -> None:
    page = desktop.page
    desktop.go("/")
    page.get_by_role("link", name=PRESCRIPTION_SUBJECT).click()
    photo = page.locator("ul.attachments > li", has_text=PHOTO)
    photo.get_by_label("Catégorie").select_option(label="Ordonnances et soins")
    photo.get_by_role("button", name="Enregistrer dans mes documents").click()
    assert page.get_by_role("heading", level=1).inner_text() == "ordonnance-photo"  # the new document's page
    assert "Ordonnances et soins" in page.locator("dl.headers").inner_text()
    page.get_by_role("link", name="le message d'origine").click()
    photo = page.locator("ul.attachments > li", has_text=PHOTO)
    assert photo.get_by_role("link", name="Voir dans mes documents").count() == 1

    desktop.go("/documents")
    category = page.get_by_role("navigation", name="Catégories").get_by_role("link", name="Ordonnances et soins")
    category.click()
    expect(category).to_have_attribute("aria-current", "page")  # the filtered page is the one shown
    assert page.locator("ul.documents li .subject").all_inner_texts() == ["ordonnance-photo"]

    desktop.go("/historique")
    history = page.locator("ol.history").inner_text()
    for sentence in (f"Dr Claire MARTIN a déposé le document « {LAB_TITLE} »",
                     f"Vous avez lu le message « {LAB_SUBJECT} »",
                     f"Vous avez consulté le document « {LAB_TITLE} »",
                     f"Vous avez téléchargé le document « {LAB_TITLE} »",
                     "Vous avez enregistré le document « ordonnance-photo » dans vos documents"):
        assert sentence in history
    assert desktop.problems == []


def test_reply_and_read_receipt_reach_the_doctor(desktop: Visit, story: Story) -> None:
    page = desktop.page
    desktop.go("/")
    page.get_by_role("link", name=LAB_SUBJECT).click()
    page.get_by_role("link", name="Répondre").click()
    page.get_by_label("Message").fill("Merci docteur, dois-je refaire un bilan dans six mois ?")
    page.get_by_role("button", name="Envoyer").click()
    page.wait_for_load_state()
    assert page.get_by_role("alert").count() == 0, page.get_by_role("alert").all_inner_texts()

    patient, doctor = story.kit.patient["address"], story.doctor["address"]

    def delivered() -> bool:
        subjects = {(parseaddr(row["from"])[1], row["subject"]) for row in inbox_of(story.kit, doctor)}
        return (patient, f"Re: {LAB_SUBJECT}") in subjects and (
            patient, f"Accusé de lecture : {LAB_SUBJECT}") in subjects

    wait_until(delivered, "the answer and the read receipt in the doctor's INBOX", timeout=15, step=0.5)
    assert desktop.problems == []


def test_after_the_doctor_ends_the_exchange_the_answer_is_closed(desktop: Visit, story: Story) -> None:
    doctor_sends(story.kit, story.doctor, doctor_message(
        story.kit, story.doctor, FIN_SUBJECT, "Bonjour,\nNotre suivi est terminé.\n", headers={"X-MSS-MES": "FIN"}))
    page = desktop.page
    desktop.go("/")
    page.get_by_role("link", name=FIN_SUBJECT).click()
    reply = page.get_by_role("button", name="Répondre")
    assert reply.is_disabled()
    assert page.locator("#pourquoi").inner_text() == "Dr Claire Martin a mis fin à vos échanges."
    assert page.get_by_role("link", name="Répondre").count() == 0
    assert desktop.problems == []
    answer = page.goto(page.url + "/repondre")  # the form's address typed by hand: refused the same way
    assert answer is not None and answer.status == 409
    assert page.get_by_role("alert").inner_text() == "Dr Claire Martin a mis fin à vos échanges."
    assert page.get_by_role("textbox").count() == 0
    assert [problem for problem in desktop.problems if "409 (Conflict)" not in problem] == []


CHILD_SUBJECT = "Résultats de Léa"
CHILD_TITLE = "Bilan sanguin de Léa"
HIDDEN_SUBJECT = "Consultation de Léa"
HIDDEN_TITLE = "Compte rendu de consultation confidentielle"


def test_parent_activates_the_child_space_and_reads_her_report_but_not_what_is_hidden(phone: Visit,
                                                                                      story: Story) -> None:
    """Sophie activates her daughter Léa's space with Léa's code; Dr Martin then writes to Léa through the
    operator (a report, and a consultation marked INVISIBLE_REP_LEGAUX); Sophie reads the report in Léa's
    space and sees nothing of the hidden document, and her actions there are Léa's history in her name."""
    kit, page = story.kit, phone.page
    child = kit.child
    phone.go("/enfants")
    assert "en attente (délai d'opposition)" in page.locator("ul.children").inner_text()
    _fits(page)
    page.get_by_label("Code provisoire de Léa Lefèvre 12 caractères").fill(child["activation_code"])
    page.get_by_role("button", name="Activer son espace").click()
    assert "L'espace santé de Léa Lefèvre est activé" in page.get_by_role("status").inner_text()

    doctor = story.doctor
    doctor_sends(kit, doctor, lab_report(kit, doctor, lab_pdf(), subject=CHILD_SUBJECT, title=CHILD_TITLE,
                                         patient=child), ins=child["ins"])
    doctor_sends(kit, doctor, lab_report(kit, doctor, pdf("Confidentiel"), subject=HIDDEN_SUBJECT,
                                         title=HIDDEN_TITLE, type_code="11488-4", filename="consultation.pdf",
                                         patient=child, confidentiality=("N", "INVISIBLE_REP_LEGAUX")),
                 ins=child["ins"])

    phone.go("/enfants")
    page.get_by_role("button", name="Ouvrir l'espace de Léa Lefèvre").click()
    page.wait_for_url(kit.url + "/")
    assert "Espace de Léa Lefèvre" in page.get_by_role("region", name="Espace affiché").inner_text()
    _fits(page)
    page.get_by_role("link", name=CHILD_SUBJECT).click()
    names = page.locator("ul.attachments > li .name").all_inner_texts()
    assert [name.split()[0] for name in names] == ["bilan.pdf", "IHE_XDM.ZIP"]
    assert page.get_by_role("link", name="Répondre").count() == 0  # a parent reads, never writes as the child

    phone.go("/")
    page.get_by_role("link", name=HIDDEN_SUBJECT).click()
    names = page.locator("ul.attachments > li .name").all_inner_texts()
    assert [name.split()[0] for name in names] == []  # both carry the hidden document: withheld
    _fits(page)

    phone.go("/documents")
    assert page.locator("ul.documents li .subject").all_inner_texts() == [CHILD_TITLE]
    phone.go("/historique")
    history = page.locator("ol.history").inner_text()
    assert f"Vous avez lu le message « {CHILD_SUBJECT} »" in history and HIDDEN_TITLE not in history
    assert "Vous avez activé l'espace santé." in history
    assert page.get_by_role("link", name="Écrire").count() == 0
    assert HIDDEN_TITLE not in page.content()

    page.get_by_role("region", name="Espace affiché").get_by_role("button", name="Revenir à mon espace").click()
    page.wait_for_url(kit.url + "/")
    assert page.get_by_role("link", name=CHILD_SUBJECT).count() == 0  # her own inbox again
    assert phone.problems == []


def test_the_patient_downloads_all_her_data_then_deletes_her_space(desktop: Visit, story: Story,
                                                                   tmp_path: Path) -> None:
    kit, page = story.kit, desktop.page
    desktop.go("/mes-donnees")
    with page.expect_download() as download:
        page.get_by_role("button", name="Télécharger toutes mes données").click()
    saved = tmp_path / "mes-donnees.zip"
    download.value.save_as(saved)
    with zipfile.ZipFile(saved) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        assert manifest["ins"] == kit.patient["ins"] and manifest["audience"] == "patient"
        for item in manifest["files"]:
            assert hashlib.sha256(archive.read(item["path"])).hexdigest() == item["sha256"]
        subjects = [message_from_bytes(archive.read(name), policy=default)["subject"]
                    for name in archive.namelist() if name.startswith("messages/")]
        assert subjects[0] == "Bienvenue dans votre messagerie Mon espace santé" and LAB_SUBJECT in subjects
        titles = [json.loads(archive.read(name))["title"] for name in archive.namelist()
                  if name.startswith("documents/") and name.endswith(".json")]
        assert LAB_TITLE in titles and "ordonnance-photo" in titles
        assert f"Vous avez lu le message « {LAB_SUBJECT} »" in archive.read("historique.html").decode()

    desktop.go("/supprimer-mon-espace")
    page.get_by_label("Votre mot de passe").fill(kit.patient["password"])
    page.get_by_label("J'ai compris que mon espace santé et tout son contenu seront supprimés.").check()
    page.get_by_role("button", name="Supprimer définitivement mon espace").click()
    page.wait_for_url(kit.url + "/connexion")
    assert "supprimé" in page.locator("main").inner_text()
    page.get_by_label("Matricule INS").fill(kit.patient["ins"])
    page.get_by_label("Mot de passe").fill(kit.patient["password"])
    page.get_by_role("button", name="Se connecter").click()
    assert page.get_by_role("alert").inner_text() == "Identifiant ou mot de passe incorrect."
    expected = ("401 (Unauthorized)", "409 (Conflict)")  # the refused login here, the closed answer before
    assert [problem for problem in desktop.problems if not problem.endswith(expected)] == []
