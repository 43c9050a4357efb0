"""The messaging pages: inbox, a message and its attachments (open, download, file), conversations, replies
and new messages (open conversations and pharmacies), read receipts queued at the first opening."""

from __future__ import annotations

from email import message_from_bytes

import pytest
from support.bridge_kit import INS
from support.web_kit import (
    DOCTOR,
    LAB,
    PDF,
    PHARMACY,
    PHARMACY_FINESS,
    PNG,
    Browser,
    WebSpace,
    deliver,
    mail,
    module_space,
)

from mes_bridge.filing.categories import Category
from mes_bridge.outgoing import BridgeSendError, PatientCannotSend
from mssante_base.patients.ins import Ins

space = module_space()


@pytest.fixture(scope="module")
def browser(space: WebSpace) -> Browser:
    return space.logged_in()


def test_inbox_lists_newest_first_with_unread_marked(space: WebSpace, browser: Browser) -> None:
    first = deliver(space.store, "active", mail(subject="Premier courrier"))
    second = deliver(space.store, "active", mail(subject="Second courrier", sender=LAB, name="Labo Central"))
    page = browser.get("/")
    assert page.status == 200
    text = page.text
    assert text.index("Second courrier") < text.index("Premier courrier")
    assert f'href="/messages/{first}"' in text and f'href="/messages/{second}"' in text
    assert "Non lu" in text and 'class="badge"' in text


def test_opening_marks_read_and_queues_the_read_receipt_once(space: WebSpace, browser: Browser) -> None:
    message_id = deliver(space.store, "active", mail(subject="Avec accusé", body="Votre résultat est normal.",
                                                     dnt=True))
    page = browser.get(f"/messages/{message_id}")
    assert page.status == 200
    assert "Votre résultat est normal." in page.text and "Avec accusé" in page.text
    record = space.store.message(INS["active"], message_id)
    assert record is not None and record.read_at is not None
    receipts = [item for item in space.store.outbox(INS["active"]) if item.extra.get("message") == message_id]
    assert len(receipts) == 1 and receipts[0].recipient == DOCTOR
    report = message_from_bytes(receipts[0].raw)
    assert report.get_content_type() == "multipart/report"
    browser.get(f"/messages/{message_id}")  # a second opening: audited, no second receipt
    assert len([item for item in space.store.outbox(INS["active"]) if item.extra.get("message") == message_id]) == 1
    views = [entry for entry in space.store.history(INS["active"], limit=50)
             if entry.action == "view-message" and entry.detail.get("message") == message_id]
    assert len(views) == 2


def test_message_body_is_text_never_markup(space: WebSpace, browser: Browser) -> None:
    message_id = deliver(space.store, "active", mail(subject="<b>Objet</b>", body="<script>alert(1)</script>"))
    page = browser.get(f"/messages/{message_id}")
    assert "<script>alert(1)" not in page.html and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.html
    assert "<b>Objet</b>" not in page.html


def test_attachments_open_download_and_file(space: WebSpace, browser: Browser) -> None:
    message_id = deliver(space.store, "active", mail(subject="Résultats", attachments=[
        ("résultats.pdf", PDF, "application/pdf"), ("photo.png", PNG, "image/png")]))
    page = browser.get(f"/messages/{message_id}")
    assert "résultats.pdf" in page.text and "Enregistrer dans mes documents" in page.text
    opened = browser.get(f"/messages/{message_id}/pieces/0")
    assert opened.status == 200 and opened.body == PDF
    assert opened.headers["Content-Type"] == "application/pdf"
    assert opened.headers["Content-Disposition"].startswith("inline;")
    assert "sandbox" in opened.headers["Content-Security-Policy"]
    downloaded = browser.get(f"/messages/{message_id}/pieces/1?telecharger=1")
    assert downloaded.headers["Content-Type"] == "image/png"
    assert downloaded.headers["Content-Disposition"].startswith('attachment; filename="photo.png"')
    assert browser.get(f"/messages/{message_id}/pieces/7").status == 404
    filed = browser.post(f"/messages/{message_id}/pieces/0/enregistrer", {"categorie": Category.BIOLOGIE.value})
    assert filed.status == 303 and filed.location and filed.location.startswith("/documents/")
    document_page = browser.get(filed.location)
    assert "résultats" in document_page.text and "Résultats de biologie" in document_page.text
    again = browser.post(f"/messages/{message_id}/pieces/0/enregistrer", {"categorie": Category.BIOLOGIE.value})
    assert again.location == filed.location  # filed once
    assert "Voir dans mes documents" in browser.get(f"/messages/{message_id}").text
    actions = [entry.action for entry in space.store.history(INS["active"], limit=10)]
    assert {"view-attachment", "download-attachment", "file"} <= set(actions)


def test_filing_refuses_an_unknown_category(space: WebSpace, browser: Browser) -> None:
    message_id = deliver(space.store, "active", mail(attachments=[("a.pdf", PDF, "application/pdf")]))
    browser.get(f"/messages/{message_id}")
    page = browser.post(f"/messages/{message_id}/pieces/0/enregistrer", {"categorie": "NOPE"})
    assert page.status == 303 and page.location == f"/messages/{message_id}"
    assert "Choisissez une catégorie" in browser.get(page.location).text


def test_reply_goes_through_the_sender(space: WebSpace, browser: Browser) -> None:
    message_id = deliver(space.store, "active", mail(subject="Rendez-vous", sender=DOCTOR))
    original = space.store.message(INS["active"], message_id)
    assert original is not None
    form = browser.get(f"/messages/{message_id}/repondre")
    assert form.status == 200 and 'value="Re: Rendez-vous"' in form.text
    before = len(space.sender.calls)
    page = browser.post(f"/messages/{message_id}/repondre", {"objet": "Re: Rendez-vous", "message": "Merci, à mardi."},
                        files=[("pieces", "ordonnance.pdf", PDF, "application/pdf")])
    assert page.status == 303 and page.location == f"/conversations/{DOCTOR}"
    call = space.sender.calls[before]
    assert call["to"] == [DOCTOR] and call["in_reply_to"] == original.message_id
    assert call["ins"].value == INS["active"] and call["actor"] == f"patient:{INS['active']}"
    assert call["attachments"] == [("ordonnance.pdf", PDF, "application/pdf")]
    thread = browser.get(page.location)
    assert "Votre message a été envoyé." in thread.text and "Vous" in thread.text


def test_reply_refuses_a_file_type_not_accepted(space: WebSpace, browser: Browser) -> None:
    message_id = deliver(space.store, "active", mail(subject="Question", sender=DOCTOR))
    browser.get(f"/messages/{message_id}/repondre")
    before = len(space.sender.calls)
    page = browser.post(f"/messages/{message_id}/repondre", {"objet": "Re", "message": "Voici."},
                        files=[("pieces", "page.html", b"<html><script>x</script></html>", "text/html")])
    assert page.status == 400 and "n'est pas accepté" in page.text
    assert len(space.sender.calls) == before


def test_reply_disabled_once_the_professional_ended_the_exchange(space: WebSpace, browser: Browser) -> None:
    ender = "dr.fin@clinique.operator.test"
    deliver(space.store, "active", mail(subject="Suivi", sender=ender, name="Dr Fin"))
    last = deliver(space.store, "active", mail(subject="Fin du suivi", sender=ender, name="Dr Fin", fin=True))
    page = browser.get(f"/messages/{last}")
    assert '<button type="button" disabled' in page.html and "Dr Fin a mis fin à vos échanges." in page.text
    assert f'href="/messages/{last}/repondre"' not in page.text
    assert browser.get(f"/messages/{last}/repondre").status == 409
    before = len(space.sender.calls)
    page = browser.post(f"/messages/{last}/repondre", {"objet": "Re", "message": "Encore une question"})
    assert page.status == 409 and len(space.sender.calls) == before
    assert "Échanges terminés" in browser.get("/conversations").text
    new_form = browser.get("/nouveau")
    assert ender not in new_form.text
    page = browser.post("/nouveau", {"a": ender, "objet": "Question", "message": "Bonjour"})
    assert page.status == 400 and len(space.sender.calls) == before


def test_new_message_to_a_pharmacy_found_by_finess(space: WebSpace, browser: Browser) -> None:
    page = browser.get(f"/nouveau?finess={PHARMACY_FINESS}")
    assert PHARMACY in page.text and "(pharmacie)" in page.text
    assert "accueil@clinique.operator.test" not in page.text  # same structure, not a pharmacy
    assert "n'est pas valable" in browser.get("/nouveau?finess=12").text
    before = len(space.sender.calls)
    page = browser.post("/nouveau", {"a": PHARMACY, "finess": PHARMACY_FINESS, "objet": "Ordonnance",
                                     "message": "Pouvez-vous préparer mon traitement ?"})
    assert page.status == 303, page.text[:400]
    assert space.sender.calls[before]["to"] == [PHARMACY] and space.sender.calls[before]["in_reply_to"] is None
    assert "Ordonnance" in browser.get(page.location).text


def test_new_message_only_to_allowed_recipients(space: WebSpace, browser: Browser) -> None:
    browser.get("/nouveau")
    before = len(space.sender.calls)
    for stranger in ["accueil@clinique.operator.test", "someone@example.org", ""]:
        page = browser.post("/nouveau", {"a": stranger, "objet": "Bonjour", "message": "Bonjour"})
        assert page.status == 400 and "Choisissez un destinataire" in page.text
    assert len(space.sender.calls) == before


def test_operator_refusal_is_shown_as_is(space: WebSpace, browser: Browser) -> None:
    refuser = "dr.refus@hopital.operator.test"
    message_id = deliver(space.store, "active", mail(subject="Consultation", sender=refuser, name="Dr Refus"))
    space.sender.refuse[refuser] = "550 5.7.1 the professional ended the exchange with this patient"
    try:
        browser.get(f"/messages/{message_id}/repondre")
        page = browser.post(f"/messages/{message_id}/repondre", {"objet": "Re", "message": "Bonjour"})
    finally:
        space.sender.refuse.clear()
    assert page.status == 400
    assert "550 5.7.1 the professional ended the exchange with this patient" in page.text


@pytest.mark.parametrize("failure, said, status", [
    (BridgeSendError(None, "cannot connect to the operator at 127.0.0.1:1: refused"),
     "Votre message n'a pas pu être envoyé : cannot connect to the operator", 400),
    (PatientCannotSend("closed"), "Votre espace ne peut pas envoyer de message.", 400),
    (RuntimeError("bug"), "Une erreur est survenue.", 500),
])
def test_send_failures_are_said(space: WebSpace, browser: Browser, failure: Exception, said: str,
                                status: int) -> None:
    message_id = deliver(space.store, "active", mail(subject="Question", sender=DOCTOR))
    browser.get(f"/messages/{message_id}/repondre")
    space.sender.fail = failure
    try:
        page = browser.post(f"/messages/{message_id}/repondre", {"objet": "Re", "message": "Bonjour"})
    finally:
        space.sender.fail = None
    assert page.status == status and said in page.text


def test_conversations_and_thread(space: WebSpace, browser: Browser) -> None:
    page = browser.get("/conversations")
    assert page.status == 200 and "Dr Martin" in page.text and "Échanges en cours" in page.text
    thread = browser.get(f"/conversations/{DOCTOR}")
    assert thread.status == 200 and "Échanges avec Dr Martin" in thread.text
    assert browser.get("/conversations/nobody@nowhere.test").status == 404


def test_pagination(space: WebSpace, browser: Browser) -> None:
    for number in range(25):
        deliver(space.store, "corsica", mail(subject=f"Courrier {number:02d}"))
    other = space.logged_in("corsica")
    first = other.get("/")
    assert "Courrier 24" in first.text and "Courrier 04" not in first.text and "Page suivante" in first.text
    second = other.get("/?page=2")
    assert "Courrier 04" in second.text and "Courrier 24" not in second.text
    assert other.get("/?page=99").status == 200 and other.get("/?page=abc").status == 200


def test_the_welcome_message_takes_no_reply(space: WebSpace, browser: Browser) -> None:
    welcome = next(message for message in space.store.messages(Ins(INS["active"])) if message.no_reply)
    page = browser.get(f"/messages/{welcome.id}")
    assert page.status == 200 and "Bienvenue dans votre messagerie Mon espace santé" in page.text
    assert f"/messages/{welcome.id}/repondre" not in page.html and ">Répondre<" not in page.html
    assert "il n'est pas possible d'y répondre" in page.text
    calls = len(space.sender.calls)
    form = browser.get(f"/messages/{welcome.id}/repondre")
    assert form.status == 403 and 'enctype="multipart/form-data"' not in form.html
    page = browser.post(f"/messages/{welcome.id}/repondre", {"objet": "Re: Bienvenue", "message": "Merci"})
    assert page.status == 403 and "il n'est pas possible d'y répondre" in page.text
    assert len(space.sender.calls) == calls
