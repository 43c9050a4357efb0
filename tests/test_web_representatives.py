"""A parent in the web space: their children's spaces activated or opposed with each child's code, the
session switched to a child's space and back, everything done there audited with the parent as actor,
nothing hidden from representatives (INVISIBLE_REP_LEGAUX) reaching the parent, nothing written as the
child, and the representation re-checked on every request (it ends at the child's majority)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date

import pytest
from support.bridge_kit import INS, make_ins
from support.web_kit import LAB, PDF, Browser, WebSpace, deliver, mail, module_space, pdf_document

from mes_bridge.store import NewPatient
from mssante_base.patients.ins import Ins
from mssante_base.patients.states import PatientState

PARENT = INS["active"]
OTHER_PARENT = INS["corsica"]
CHILD = make_ins("1150675111001")
SISTER = make_ins("2170675111002")  # to be opposed by the parent
NEIGHBOUR = make_ins("1160675111003")  # another parent's child
ADULT = make_ins("1000175111004")  # the parent's, but of age
COUSIN = make_ins("2880675111005")  # another parent's child, pending

space = module_space()


def _born(years_ago: int) -> str:
    today = date.today()
    return today.replace(year=today.year - years_ago, day=min(today.day, 28)).isoformat()


@dataclass
class Family:
    codes: dict[str, str]
    parent: Browser


def _child(space: WebSpace, ins: str, given: str, *, years: int, parent: str) -> str:
    _, code = space.store.create_patient(
        NewPatient(Ins(ins), PatientState.PENDING, given, "Active", birth_date=_born(years)),
        actor="operator:test", representatives=[Ins(parent)])
    return code


@pytest.fixture(scope="module")
def family(space: WebSpace) -> Family:
    codes = {ins: _child(space, ins, given, years=years, parent=parent) for ins, given, years, parent in [
        (CHILD, "Léo", 10, PARENT), (SISTER, "Zoé", 8, PARENT), (NEIGHBOUR, "Tom", 9, OTHER_PARENT),
        (ADULT, "Paul", 20, PARENT), (COUSIN, "Lou", 7, OTHER_PARENT)]}
    space.store.set_state(Ins(NEIGHBOUR), PatientState.ACTIVE, actor="operator:test")
    space.store.set_state(Ins(ADULT), PatientState.ACTIVE, actor="operator:test")
    return Family(codes, space.logged_in())


@pytest.fixture(scope="module")
def activated(space: WebSpace, family: Family) -> Family:
    """Léo's space activated by his parent from « Mes enfants »."""
    browser = family.parent
    page = browser.get("/enfants")
    assert page.status == 200 and "Léo Active" in page.text
    page = browser.post(f"/enfants/{CHILD}/activer", {"code": family.codes[CHILD]})
    assert page.status == 303 and page.location == "/enfants", page.text[:300]
    return family


def _open(browser: Browser, child: str) -> None:
    browser.get("/enfants")
    page = browser.post(f"/enfants/{child}/ouvrir")
    assert page.status == 303 and page.location == "/", page.text[:300]


def _own(browser: Browser) -> None:
    page = browser.post("/mon-espace")
    assert page.status == 303 and page.location == "/"


def test_children_page_lists_the_represented_children_only(space: WebSpace, family: Family) -> None:
    page = family.parent.get("/enfants")
    assert page.status == 200 and "<h1>Mes enfants</h1>" in page.html
    assert "Léo Active" in page.text and "Zoé Active" in page.text
    assert "Tom Active" not in page.text  # another parent's child
    assert "Paul Active" not in page.text  # of age: nobody represents him
    assert "en attente (délai d'opposition)" in page.text
    assert f'action="/enfants/{CHILD}/activer"' in page.html and f'action="/enfants/{CHILD}/opposer"' in page.html
    assert 'label for="activer-' in page.html


def test_a_wrong_code_gets_the_generic_refusal(space: WebSpace, family: Family) -> None:
    browser = family.parent
    browser.get("/enfants")
    page = browser.post(f"/enfants/{SISTER}/activer", {"code": "AAAAAAAAAAAA"})
    assert page.status == 400 and "Matricule INS ou code provisoire incorrect, ou code expiré." in page.text
    for action in ("activer", "opposer"):  # the right code of a child the parent does not represent
        page = browser.post(f"/enfants/{COUSIN}/{action}", {"code": family.codes[COUSIN]})
        assert page.status == 400 and "code provisoire incorrect" in page.text
    assert space.store.patient(COUSIN).state == PatientState.PENDING
    assert space.store.patient(SISTER).state == PatientState.PENDING


def test_parent_opposes_a_childs_space(space: WebSpace, family: Family) -> None:
    browser = family.parent
    browser.get("/enfants")
    page = browser.post(f"/enfants/{SISTER}/opposer", {"code": family.codes[SISTER]})
    assert page.status == 303 and page.location == "/enfants"
    assert "Votre opposition à la création de l'espace de Zoé Active est enregistrée." in browser.get("/enfants").text
    assert space.store.patient(SISTER).state == PatientState.OPPOSED
    entry = next(entry for entry in space.store.history(SISTER, limit=5) if entry.action == "oppose")
    assert entry.actor == f"representative:{PARENT}"


def test_parent_activates_then_reads_the_childs_lab_report(space: WebSpace, activated: Family) -> None:
    assert space.store.patient(CHILD).state == PatientState.ACTIVE
    activation = next(entry for entry in space.store.history(CHILD, limit=10) if entry.action == "activate")
    assert activation.actor == f"representative:{PARENT}"
    deliver(space.store, CHILD, mail(sender=LAB, name="Laboratoire Central", subject="Résultats de Léo",
                                     attachments=[("bilan.pdf", PDF, "application/pdf")]),
            documents=[pdf_document("Bilan sanguin de Léo", attachment_index=0)])
    browser = activated.parent
    page = browser.get("/enfants")
    assert f'action="/enfants/{CHILD}/ouvrir"' in page.html and f'action="/enfants/{CHILD}/activer"' not in page.html
    _open(browser, CHILD)
    try:
        page = browser.get("/")
        assert "Espace de Léo Active" in page.text and "Revenir à mon espace" in page.text
        assert "Résultats de Léo" in page.text and "Bienvenue dans votre messagerie" in page.text
        assert "Jeanne Active" in page.text  # who is logged in is still said
        page = browser.get("/documents")
        assert "Bilan sanguin de Léo" in page.text and "Espace de Léo Active" in page.text
        document = next(doc for doc in space.store.documents(CHILD) if doc.title == "Bilan sanguin de Léo")
        content = browser.get(f"/documents/{document.id}/contenu")
        assert content.status == 200 and content.body == document_bytes(space, document.id)
        seen = next(entry for entry in space.store.history(CHILD, limit=5) if entry.action == "view-document")
        assert seen.actor == f"representative:{PARENT}" and seen.detail["document"] == document.id
        assert not any(entry.action == "view-document" for entry in space.store.history(PARENT, limit=20))
    finally:
        _own(browser)
    page = browser.get("/")
    assert "Espace de Léo Active" not in page.text and "Résultats de Léo" not in page.text


def document_bytes(space: WebSpace, document_id: int) -> bytes:
    document = space.store.document(CHILD, document_id)
    assert document is not None
    return space.store.read_blob(document.blob_key)


def test_documents_hidden_from_representatives_never_reach_the_parent(space: WebSpace, activated: Family) -> None:
    secret = PDF + b"confidentiel"
    message_id = deliver(space.store, CHILD, mail(sender=LAB, name="Laboratoire Central", subject="Consultation",
                                                  attachments=[("confidentiel.pdf", secret, "application/pdf")]),
                         documents=[dataclasses.replace(pdf_document("Résultat confidentiel", attachment_index=0),
                                                        data=secret, hidden_from_legal_reps=True)])
    hidden = next(doc for doc in space.store.all_documents(CHILD) if doc.title == "Résultat confidentiel")
    browser = activated.parent
    _open(browser, CHILD)
    try:
        page = browser.get("/documents")
        assert page.status == 200 and "Résultat confidentiel" not in page.text
        assert browser.get(f"/documents?categorie={hidden.category.value}").text.count("confidentiel") == 0
        assert browser.get(f"/documents/{hidden.id}").status == 404
        assert browser.get(f"/documents/{hidden.id}/contenu?telecharger=1").status == 404
        browser.get("/documents")
        assert browser.post(f"/documents/{hidden.id}/masquer").status == 404
        page = browser.get("/")
        listed = page.text.split("Consultation", 1)[1].split("</li>", 1)[0]
        assert "pièce jointe" not in listed  # not even how many are withheld
        page = browser.get(f"/messages/{message_id}")
        assert page.status == 200 and "Consultation" in page.text
        assert "confidentiel.pdf" not in page.text and f"/messages/{message_id}/pieces/0" not in page.html
        assert browser.get(f"/messages/{message_id}/pieces/0").status == 404
        assert browser.get(f"/messages/{message_id}/pieces/0?telecharger=1").status == 404
        assert browser.post(f"/messages/{message_id}/pieces/0/enregistrer", {"categorie": "BIOLOGIE"}).status == 404
        page = browser.get("/historique")
        assert page.status == 200 and "Historique de l'espace de Léo Active" in page.text
        assert "confidentiel" not in page.text.lower() and "a déposé un document" not in page.text
        assert "Vous avez activé l'espace santé." in page.text  # the parent reads their own action as « Vous »
        assert "Vous avez lu le message « Consultation »." in page.text
    finally:
        _own(browser)
    assert hidden.id in {doc.id for doc in space.store.documents(CHILD)}  # the child sees it, not the parent
    assert space.store.withheld_attachments(CHILD, message_id) == set()


def test_no_read_receipt_and_nothing_written_as_the_child(space: WebSpace, activated: Family) -> None:
    message_id = deliver(space.store, CHILD, mail(subject="Avec accusé", dnt=True))
    browser = activated.parent
    _open(browser, CHILD)
    try:
        page = browser.get(f"/messages/{message_id}")
        assert page.status == 200 and "Avec accusé" in page.text
        assert f"/messages/{message_id}/repondre" not in page.html and "Répondre" not in page.text
        assert not [item for item in space.store.outbox(CHILD) if item.extra.get("message") == message_id]
        assert 'href="/nouveau"' not in browser.get("/").html
        calls = len(space.sender.calls)
        page = browser.get("/nouveau")
        assert page.status == 403 and "pas écrire en son nom" in page.text and 'action="/nouveau"' not in page.html
        assert browser.post("/nouveau", {"a": "dr.martin@hopital.operator.test", "objet": "x",
                                         "message": "y"}).status == 403
        page = browser.post(f"/messages/{message_id}/repondre", {"objet": "Re", "message": "Merci"})
        assert page.status == 403 and "pas écrire en son nom" in page.text
        assert len(space.sender.calls) == calls
        page = browser.get("/supprimer-mon-espace")
        assert page.status == 403 and "votre propre espace" in page.text
        assert browser.post("/supprimer-mon-espace", {"mot_de_passe": "x", "confirmation": "oui"}).status == 403
        assert space.store.patient(CHILD).state == PatientState.ACTIVE
    finally:
        _own(browser)


def test_cannot_open_a_space_one_does_not_represent(space: WebSpace, family: Family) -> None:
    browser = family.parent
    browser.get("/enfants")
    for child in (NEIGHBOUR, ADULT, SISTER, PARENT):  # another's, of age, not active, oneself
        page = browser.post(f"/enfants/{child}/ouvrir")
        assert page.status == 404, child
        assert "Espace de" not in browser.get("/").text


def test_representation_is_checked_again_on_every_request(space: WebSpace, activated: Family) -> None:
    browser = activated.parent
    _open(browser, CHILD)
    policy = space.store.policy
    space.store.policy = dataclasses.replace(policy, representation_until_age=5)  # Léo, 10, is now of age
    try:
        page = browser.get("/documents", follow=False)
        assert page.status == 303 and page.location == "/"
        page = browser.get("/")
        assert "Vous n'avez plus accès à l'espace de cet enfant" in page.text and "Espace de Léo" not in page.text
    finally:
        space.store.policy = policy
    _open(browser, CHILD)
    space.store.set_state(Ins(CHILD), PatientState.CLOSED, actor="operator:test")
    try:
        assert browser.get("/", follow=False).location == "/"
        assert "Espace de Léo" not in browser.get("/").text
        assert browser.post(f"/enfants/{CHILD}/ouvrir").status == 404
    finally:
        space.store.set_state(Ins(CHILD), PatientState.ACTIVE, actor="operator:test")
