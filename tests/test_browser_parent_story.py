"""A parent's story in Debian's headless Chromium, at phone width: they activate their child's space with
the child's provisional code from « Mes enfants », open it, read the child's lab report, do not see the
document hidden from legal representatives, read the history, and go back to their own space. No
script runs (the CSP forbids it): every step is a link or a form.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import date

import pytest
from cryptography import x509
from playwright.sync_api import Browser, Page
from support.bridge_kit import INS, PASSWORD, make_ins
from support.browser import horizontal_overflow, open_page, page_problems
from support.web_kit import LAB, PDF, WebSpace, deliver, last_login_code, mail, pdf_document, running_web

from mes_bridge.store import NewPatient
from mssante_base.patients.ins import Ins
from mssante_base.patients.states import PatientState

PARENT = INS["active"]
CHILD = make_ins("1150675111001")
REPORT = "Résultats de Léo"
LAB_TITLE = "Bilan sanguin de Léo"
SECRET_TITLE = "Consultation confidentielle"


@dataclasses.dataclass
class Family:
    space: WebSpace
    code: str
    url: str


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Family]:
    with running_web(tmp_path_factory) as space:
        today = date.today()
        born = today.replace(year=today.year - 10, day=min(today.day, 28)).isoformat()
        _, code = space.store.create_patient(NewPatient(Ins(CHILD), PatientState.PENDING, "Léo", "Active",
                                                        birth_date=born),
                                             actor="operator:test", representatives=[Ins(PARENT)])
        secret = PDF + b"confidentiel"
        deliver(space.store, CHILD, mail(sender=LAB, name="Laboratoire Central", subject=REPORT,
                                         attachments=[("bilan.pdf", PDF, "application/pdf"),
                                                      ("confidentiel.pdf", secret, "application/pdf")]),
                documents=[pdf_document(LAB_TITLE, attachment_index=0),
                           dataclasses.replace(pdf_document(SECRET_TITLE, attachment_index=1), data=secret,
                                               hidden_from_legal_reps=True)])
        yield Family(space, code, f"https://127.0.0.1:{space.port}")


@pytest.fixture(scope="module")
def browser_trust(family: Family) -> list[x509.Certificate]:
    """The web space presents the bridge's chain: trust it only."""
    return x509.load_pem_x509_certificates((family.space.ca.parent / "bridge.pem").read_bytes())


@pytest.fixture(scope="module")
def phone(chromium: Browser, family: Family) -> Iterator[tuple[Page, list[str]]]:
    page = open_page(chromium, "phone")
    problems = page_problems(page)
    page.goto(family.url + "/connexion")
    page.get_by_label("Matricule INS").fill(PARENT)
    page.get_by_label("Mot de passe").fill(PASSWORD)
    page.get_by_role("button", name="Se connecter").click()
    page.wait_for_url(family.url + "/connexion/code")
    page.get_by_label("Code reçu").fill(last_login_code(family.space.store, PARENT))
    page.get_by_role("button", name="Valider").click()
    page.wait_for_url(family.url + "/")
    yield page, problems
    page.context.close()


def _fits(page: Page) -> None:
    assert horizontal_overflow(page) == 0, f"{page.url} scrolls sideways at phone width"


def test_parent_activates_the_childs_space_and_reads_the_lab_report(phone: tuple[Page, list[str]],
                                                                    family: Family) -> None:
    page, problems = phone
    page.get_by_role("link", name="Mes enfants").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Mes enfants"
    assert "en attente (délai d'opposition)" in page.locator("ul.children").inner_text()
    _fits(page)
    page.get_by_label("Code provisoire de Léo Active 12 caractères").fill(family.code)
    page.get_by_role("button", name="Activer son espace").click()
    assert "L'espace santé de Léo Active est activé" in page.get_by_role("status").inner_text()
    page.get_by_role("button", name="Ouvrir l'espace de Léo Active").click()
    page.wait_for_url(family.url + "/")
    banner = page.get_by_role("region", name="Espace affiché")
    assert "Espace de Léo Active" in banner.inner_text()
    assert page.get_by_role("link", name="Écrire").count() == 0
    _fits(page)

    page.get_by_role("link", name=REPORT).click()
    attachments = page.locator("ul.attachments > li .name").all_inner_texts()
    assert len(attachments) == 1 and attachments[0].startswith("bilan.pdf")
    assert page.get_by_role("link", name="Répondre").count() == 0
    _fits(page)

    page.get_by_role("navigation", name="Menu principal").get_by_role("link", name="Documents").click()
    assert [row.split("\n")[0] for row in page.locator("ul.documents li").all_inner_texts()] == [LAB_TITLE]
    page.get_by_role("link", name=LAB_TITLE).click()
    assert page.get_by_role("heading", level=1).inner_text() == LAB_TITLE
    _fits(page)

    page.get_by_role("navigation", name="Menu principal").get_by_role("link", name="Historique").click()
    history = page.locator("ol.history").inner_text()
    assert "Vous avez activé l'espace santé." in history and f"Vous avez lu le message « {REPORT} »." in history
    assert SECRET_TITLE not in history and "confidentiel" not in page.content()
    _fits(page)

    banner = page.get_by_role("region", name="Espace affiché")
    banner.get_by_role("button", name="Revenir à mon espace").click()
    page.wait_for_url(family.url + "/")
    assert page.get_by_role("region", name="Espace affiché").count() == 0
    assert page.get_by_role("link", name=REPORT).count() == 0
    views = [entry for entry in family.space.store.history(CHILD, limit=50) if entry.action == "view-message"]
    assert views and all(entry.actor == f"representative:{PARENT}" for entry in views)
    assert problems == []
