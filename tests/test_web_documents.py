"""The dossier pages: categories with counts, filters, a document and its content, masking, and uploads
(type from the content, size capped)."""

from __future__ import annotations

import pytest
from support.bridge_kit import INS
from support.web_kit import HTML, LAB, PDF, PNG, Browser, WebSpace, deliver, mail, module_space, pdf_document

from mes_bridge.filing.categories import Category

space = module_space()


@pytest.fixture(scope="module")
def browser(space: WebSpace) -> Browser:
    deliver(space.store, "active", mail(sender=LAB, name="Laboratoire Central", subject="Vos résultats"),
            documents=[pdf_document("Bilan sanguin"), pdf_document("Radio du genou", category=Category.RADIO_SC)])
    return space.logged_in()


def _id(space: WebSpace, title: str) -> int:
    return next(doc.id for doc in space.store.documents(INS["active"], limit=500) if doc.title == title)


def test_documents_by_category_with_counts(space: WebSpace, browser: Browser) -> None:
    page = browser.get("/documents")
    assert page.status == 200
    assert "Bilan sanguin" in page.text and "Radio du genou" in page.text
    assert "Résultats de biologie" in page.text and "Laboratoire Central" in page.text
    only = browser.get("/documents?categorie=BIOLOGIE")
    assert "Bilan sanguin" in only.text and "Radio du genou" not in only.text
    assert 'aria-current="page">Résultats de biologie' in only.text
    unknown = browser.get("/documents?categorie=NOPE")
    assert unknown.status == 200 and "Catégorie inconnue" in unknown.text


def test_filters_by_author_and_dates(space: WebSpace, browser: Browser) -> None:
    assert "Bilan sanguin" in browser.get(f"/documents?auteur={LAB}").text
    assert "Bilan sanguin" not in browser.get("/documents?auteur=patient").text
    assert "Bilan sanguin" in browser.get("/documents?du=2000-01-01&au=2999-12-31").text
    assert "Bilan sanguin" not in browser.get("/documents?du=2999-01-01").text
    assert "Date incorrecte" in browser.get("/documents?du=hier").text


def test_document_page_and_content(space: WebSpace, browser: Browser) -> None:
    document_id = _id(space, "Bilan sanguin")
    page = browser.get(f"/documents/{document_id}")
    assert page.status == 200 and "Bilan sanguin" in page.text and "Ouvrir" in page.text
    opened = browser.get(f"/documents/{document_id}/contenu")
    assert opened.status == 200 and opened.body.startswith(PDF)
    assert opened.headers["Content-Type"] == "application/pdf"
    assert opened.headers["Content-Disposition"].startswith("inline;")
    downloaded = browser.get(f"/documents/{document_id}/contenu?telecharger=1")
    assert downloaded.headers["Content-Disposition"].startswith("attachment;")
    actions = [entry.action for entry in space.store.history(INS["active"], limit=5)]
    assert actions[:2] == ["download-document", "view-document"]


def test_masking_toggles(space: WebSpace, browser: Browser) -> None:
    document_id = _id(space, "Radio du genou")
    browser.get(f"/documents/{document_id}")
    page = browser.post(f"/documents/{document_id}/masquer")
    assert page.status == 303 and page.location == f"/documents/{document_id}"
    assert space.store.document(INS["active"], document_id).masked_from_professionals
    assert "Rendre visible aux professionnels" in browser.get(page.location).text
    browser.post(f"/documents/{document_id}/masquer")
    assert not space.store.document(INS["active"], document_id).masked_from_professionals


def test_upload_accepts_the_formats_of_the_space(space: WebSpace, browser: Browser) -> None:
    assert browser.get("/documents/ajouter").status == 200
    for filename, data, title in [("ordonnance.pdf", PDF, "Mon ordonnance"), ("scan.png", PNG, ""),
                                  ("notes.txt", b"Tension 12/8, tout va bien.\n", "")]:
        page = browser.post("/documents/ajouter", {"titre": title, "categorie": Category.ORD_SOIN.value},
                            files=[("fichier", filename, data, "application/octet-stream")])
        assert page.status == 303, (filename, page.text[:500])
        document = space.store.document(INS["active"], int(page.location.rsplit("/", 1)[1]))
        assert document is not None and document.deposited_by == "patient"
        assert document.title == (title or filename.rsplit(".", 1)[0]) and document.category == Category.ORD_SOIN
    assert "Vous" in browser.get("/documents?auteur=patient").text


@pytest.mark.parametrize("filename, data", [
    ("page.pdf", HTML),  # named like a PDF, HTML inside: the content decides
    ("archive.zip", b"PK\x03\x04" + b"\x00" * 40),
    ("vide.pdf", b""),
])
def test_upload_refuses_other_content(space: WebSpace, browser: Browser, filename: str, data: bytes) -> None:
    before = space.store.count_documents(INS["active"])
    browser.get("/documents/ajouter")
    page = browser.post("/documents/ajouter", {"categorie": Category.AUTR_DOC.value},
                        files=[("fichier", filename, data, "application/pdf")])
    assert page.status == 400
    assert space.store.count_documents(INS["active"]) == before


def test_upload_size_is_capped(space: WebSpace, browser: Browser) -> None:
    browser.get("/documents/ajouter")
    big = PDF + b"0" * space.settings.max_upload_size
    page = browser.post("/documents/ajouter", {"categorie": Category.AUTR_DOC.value},
                        files=[("fichier", "gros.pdf", big, "application/pdf")])
    assert page.status == 400 and "dépasse" in page.text
    huge = PDF + b"0" * (space.settings.max_upload_size * 5)
    page = browser.post("/documents/ajouter", {"categorie": Category.AUTR_DOC.value},
                        files=[("fichier", "enorme.pdf", huge, "application/pdf")])
    assert page.status == 413


def test_upload_needs_a_category_and_a_file(space: WebSpace, browser: Browser) -> None:
    browser.get("/documents/ajouter")
    page = browser.post("/documents/ajouter", {"categorie": "NOPE"}, files=[("fichier", "a.pdf", PDF, "x/y")])
    assert page.status == 400 and "Choisissez une catégorie" in page.text
    page = browser.post("/documents/ajouter", {"categorie": Category.AUTR_DOC.value},
                        files=[("fichier", "", b"", "application/octet-stream")])
    assert page.status == 400 and "Choisissez un fichier" in page.text
