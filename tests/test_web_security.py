"""The web space's protections: headers everywhere, the session cookie's attributes, CSRF on every POST,
another patient's ids as 404s, login rate limits, active content served inert, hidden documents unseen."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from support.bridge_kit import INS, PASSWORD, make_ins
from support.web_kit import (
    HTML,
    LAB,
    PDF,
    SVG,
    Browser,
    WebSpace,
    deliver,
    mail,
    module_space,
    pdf_document,
    running_web,
)

from mes_bridge.filing.categories import Category
from mssante_base.patients.ins import Ins
from mssante_base.patients.states import PatientState

PAGE_CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
            "base-uri 'none'")
OTHER_LAB = "autre-labo@labo.operator.test"


@dataclass
class Seeded:
    """What belongs to the patient "corsica" (the other patient), and to "active"."""

    other_message: int
    other_document: int
    active_message: int
    active_document: int
    hidden_document: int
    active_html_message: int


space = module_space()


@pytest.fixture(scope="module")
def seeded(space: WebSpace) -> Seeded:
    store = space.store
    other_message = deliver(store, "corsica", mail(sender=OTHER_LAB, subject="Pour Corsica",
                                                   attachments=[("c.pdf", PDF, "application/pdf")]),
                            documents=[pdf_document("Document de Corsica")])
    active_message = deliver(store, "active", mail(sender=LAB, subject="Pour Active",
                                                   attachments=[("a.pdf", PDF, "application/pdf")]),
                             documents=[pdf_document("Document visible"),
                                        pdf_document("Annonce à venir", hidden_from_patient=True)])
    html_message = deliver(store, "active", mail(subject="Pièces actives", attachments=[
        ("page.html", HTML, "text/html"), ("dessin.svg", SVG, "image/svg+xml"),
        ("faux.pdf", HTML, "application/pdf")]))
    documents = {doc.title: doc.id for doc in store.all_documents(INS["active"]) + store.all_documents(INS["corsica"])}
    return Seeded(other_message, documents["Document de Corsica"], active_message, documents["Document visible"],
                  documents["Annonce à venir"], html_message)


@pytest.fixture(scope="module")
def browser(space: WebSpace, seeded: Seeded) -> Browser:
    return space.logged_in()


def _assert_headers(page_headers: object, *, content: bool = False) -> None:
    headers = page_headers  # http.client.HTTPMessage
    csp = headers["Content-Security-Policy"]  # type: ignore[index]
    assert ("sandbox" in csp) if content else csp == PAGE_CSP
    assert headers["X-Content-Type-Options"] == "nosniff"  # type: ignore[index]
    assert headers["Referrer-Policy"] == "no-referrer"  # type: ignore[index]
    assert headers["Cache-Control"] == "no-store"  # type: ignore[index]
    assert headers["X-Frame-Options"] == "DENY"  # type: ignore[index]


def test_headers_on_every_kind_of_response(space: WebSpace, browser: Browser, seeded: Seeded) -> None:
    anonymous = space.browser()
    for page in [anonymous.get("/connexion"), anonymous.get("/activation"), anonymous.get("/", follow=False),
                 anonymous.get("/static/style.css"), anonymous.get("/nulle-part", follow=False),
                 anonymous.post("/connexion", {"ins": "x"}, csrf=None)]:
        _assert_headers(page.headers)
    for path in ["/", "/conversations", "/documents", "/historique", "/nouveau", "/documents/ajouter",
                 f"/messages/{seeded.active_message}", f"/documents/{seeded.active_document}", "/messages/999999"]:
        _assert_headers(browser.get(path).headers)
    _assert_headers(browser.get(f"/messages/{seeded.active_message}/pieces/0").headers, content=True)
    _assert_headers(browser.get(f"/documents/{seeded.active_document}/contenu").headers, content=True)
    assert anonymous.get("/static/style.css").headers.get_content_type() == "text/css"


def test_session_cookie_attributes(space: WebSpace) -> None:
    browser = space.browser()
    page = browser.get("/connexion")
    cookies = [header for header in page.cookies() if header.startswith("__Host-mes=")]
    assert cookies, page.cookies()
    browser.login(INS["active"], PASSWORD, space.store)
    page = browser.get("/")
    for header in [*cookies, *page.cookies()]:
        attributes = {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}
        assert {"secure", "httponly", "samesite", "path"} <= attributes and "domain" not in attributes, header
        assert "SameSite=Strict" in header and "Path=/" in header
    assert "ins" not in " ".join(page.cookies()).lower().replace("__host-mes", "")  # opaque (encrypted) value


def test_every_post_needs_the_csrf_token(space: WebSpace, browser: Browser, seeded: Seeded) -> None:
    message, document = seeded.active_message, seeded.active_document
    posts = {
        "/connexion": {"ins": INS["active"], "mot_de_passe": PASSWORD},
        "/connexion/code": {"code": "123456"},
        "/activation": {"ins": INS["active"], "code": "x"},
        "/deconnexion": {},
        f"/messages/{message}/pieces/0/enregistrer": {"categorie": "AUTR_DOC"},
        f"/messages/{message}/repondre": {"objet": "x", "message": "y"},
        "/nouveau": {"a": LAB, "objet": "x", "message": "y"},
        f"/documents/{document}/masquer": {},
        "/documents/ajouter": {"categorie": "AUTR_DOC"},
        "/opposition": {"ins": INS["not_activated"], "code": "x"},
        "/supprimer-mon-espace": {"mot_de_passe": PASSWORD, "confirmation": "oui"},
        f"/enfants/{INS['corsica']}/activer": {"code": "x"},
        f"/enfants/{INS['corsica']}/opposer": {"code": "x"},
        f"/enfants/{INS['corsica']}/ouvrir": {},
        "/mon-espace": {},
    }
    other = space.browser()
    other.get("/connexion")
    before = space.store.count_history(INS["active"])
    for path, fields in posts.items():
        for token in [None, "", "forged-token", other.csrf]:
            page = browser.post(path, fields, csrf=token)
            assert page.status == 403, (path, token, page.status)
            assert "Action refusée" in page.text
    assert space.store.count_history(INS["active"]) == before
    assert not space.store.document(INS["active"], document).masked_from_professionals
    assert browser.get("/").status == 200  # still logged in: a refused POST changes nothing


def test_another_patients_ids_are_404(space: WebSpace, browser: Browser, seeded: Seeded) -> None:
    message, document = seeded.other_message, seeded.other_document
    for path in [f"/messages/{message}", f"/messages/{message}/pieces/0", f"/messages/{message}/pieces/0?telecharger=1",
                 f"/messages/{message}/repondre", f"/documents/{document}", f"/documents/{document}/contenu",
                 f"/conversations/{OTHER_LAB}", "/messages/987654321", "/documents/987654321"]:
        page = browser.get(path)
        assert page.status == 404, path
        assert "Page introuvable" in page.text and "Pour Corsica" not in page.text
    browser.get("/")
    for path, fields in [(f"/messages/{message}/pieces/0/enregistrer", {"categorie": "AUTR_DOC"}),
                         (f"/messages/{message}/repondre", {"objet": "x", "message": "y"}),
                         (f"/documents/{document}/masquer", {})]:
        assert browser.post(path, fields).status == 404, path
    browser.get("/nouveau")
    assert browser.post("/nouveau", {"a": OTHER_LAB, "objet": "x", "message": "y"}).status == 400
    assert not space.store.document(INS["corsica"], document).masked_from_professionals
    assert space.store.message(INS["corsica"], message).read_at is None
    assert not [call for call in space.sender.calls if OTHER_LAB in call["to"]]


@pytest.mark.parametrize("index, name", [(0, "page.html"), (1, "dessin.svg"), (2, "faux.pdf")])
def test_active_attachments_are_inert_downloads(browser: Browser, seeded: Seeded, index: int, name: str) -> None:
    page = browser.get(f"/messages/{seeded.active_html_message}/pieces/{index}")  # asked inline: still a download
    assert page.status == 200 and page.body in (HTML, SVG)
    assert page.headers["Content-Type"] == "application/octet-stream"
    assert page.headers["Content-Disposition"].startswith(f'attachment; filename="{name}"')
    assert "sandbox" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    message_page = browser.get(f"/messages/{seeded.active_html_message}")
    assert f'href="/messages/{seeded.active_html_message}/pieces/{index}"' not in message_page.html  # no "Ouvrir"
    assert "ne peut pas être enregistré" in message_page.text


def test_an_active_attachment_cannot_be_filed(browser: Browser, seeded: Seeded, space: WebSpace) -> None:
    before = space.store.count_documents(INS["active"])
    browser.get(f"/messages/{seeded.active_html_message}")
    page = browser.post(f"/messages/{seeded.active_html_message}/pieces/0/enregistrer", {"categorie": "AUTR_DOC"})
    assert page.status == 303 and page.location == f"/messages/{seeded.active_html_message}"
    assert space.store.count_documents(INS["active"]) == before


def test_hidden_documents_are_never_listed_nor_served(space: WebSpace, browser: Browser, seeded: Seeded) -> None:
    hidden = seeded.hidden_document
    for path in ["/documents", "/documents?categorie=BIOLOGIE", "/historique", f"/messages/{seeded.active_message}"]:
        assert "Annonce à venir" not in browser.get(path).text, path
    for path in [f"/documents/{hidden}", f"/documents/{hidden}/contenu", f"/documents/{hidden}/contenu?telecharger=1"]:
        assert browser.get(path).status == 404, path
    browser.get("/documents")
    assert browser.post(f"/documents/{hidden}/masquer").status == 404
    counts = browser.get("/documents").text
    assert "Tous les documents" in counts
    space.store.release(INS["active"], hidden, actor="professional:" + LAB)
    assert "Annonce à venir" in browser.get("/documents").text
    assert browser.get(f"/documents/{hidden}/contenu").status == 200
    assert "Annonce à venir" in browser.get("/historique").text


def test_login_limits_answer_429(tmp_path_factory: pytest.TempPathFactory) -> None:
    with running_web(tmp_path_factory, login_per_ins="3/15 minutes", login_per_ip="6/15 minutes") as tight:
        browser = tight.browser()
        browser.get("/connexion")
        for _ in range(3):
            assert browser.post("/connexion", {"ins": INS["active"], "mot_de_passe": "faux"}).status == 401
        page = browser.post("/connexion", {"ins": INS["active"], "mot_de_passe": PASSWORD})  # even the right one
        assert page.status == 429 and "Trop de tentatives" in page.text
        assert int(page.headers["Retry-After"]) > 0
        unknown = browser.post("/connexion", {"ins": INS["unknown"], "mot_de_passe": "faux"})
        assert unknown.status == 401  # another INS is not limited by the first one's count …
        for number in range(2):
            browser.post("/connexion", {"ins": make_ins(f"19908751112{number:02d}"), "mot_de_passe": "faux"})
        page = browser.post("/connexion", {"ins": INS["corsica"], "mot_de_passe": PASSWORD})
        assert page.status == 429  # … but this address has made too many attempts
        activation = tight.browser()
        activation.get("/activation")
        statuses = [activation.post("/activation", {"ins": INS["not_activated"], "code": "x"}).status
                    for _ in range(4)]
        assert statuses == [400, 400, 400, 429]  # activation codes are counted apart from logins


def test_every_form_that_checks_a_provisional_code_shares_one_limit(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    from mes_bridge.store import NewPatient

    with running_web(tmp_path_factory, login_per_ins="3/15 minutes", login_per_ip="100/15 minutes") as tight:
        child = Ins(make_ins("1150675111001"))
        tight.store.create_patient(NewPatient(child, PatientState.PENDING, "Léo", "Active"), actor="operator:test",
                                   representatives=[Ins(INS["active"])])
        public = tight.browser()
        public.get("/opposition")
        assert public.post("/opposition", {"ins": child.value, "code": "x"}).status == 400
        public.get("/activation")
        assert public.post("/activation", {"ins": child.value, "code": "x"}).status == 400
        parent = tight.logged_in()
        parent.get("/enfants")
        assert parent.post(f"/enfants/{child.value}/activer", {"code": "x"}).status == 400
        page = parent.post(f"/enfants/{child.value}/opposer", {"code": "x"})
        assert page.status == 429 and "Trop de tentatives" in page.text and "Mes enfants" in page.text
        page = public.post("/opposition", {"ins": child.value, "code": "x"})
        assert page.status == 429 and int(page.headers["Retry-After"]) > 0
        assert tight.store.patient(child).state == PatientState.PENDING


def test_unknown_and_known_ins_cost_the_same_limit(tmp_path_factory: pytest.TempPathFactory) -> None:
    with running_web(tmp_path_factory, login_per_ins="2/15 minutes", login_per_ip="100/15 minutes") as tight:
        browser = tight.browser()
        browser.get("/connexion")
        answers = {}
        for who in ["active", "unknown"]:
            answers[who] = [browser.post("/connexion", {"ins": INS[who], "mot_de_passe": "faux"}).status
                            for _ in range(3)]
        assert answers["active"] == answers["unknown"] == [401, 401, 429]


def test_ins_from_the_session_only(space: WebSpace, browser: Browser, seeded: Seeded) -> None:
    """Query parameters naming another INS change nothing: the store is always asked with the session's."""
    other = Ins(INS["corsica"]).value
    page = browser.get(f"/documents?ins={other}&categorie={Category.BIOLOGIE.value}")
    assert "Document de Corsica" not in page.text and "Document visible" in page.text
