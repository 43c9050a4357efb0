"""The history page and the sentences it tells: each audit action as the patient reads it, in French."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from support.bridge_kit import INS
from support.web_kit import LAB, WebSpace, deliver, mail, module_space, pdf_document

from mes_bridge.sentences import PHRASES, Names, sentence
from mes_bridge.store import AuditEntry
from mes_bridge.web.pages import date_fr, size_fr

OWN = INS["active"]
NAMES = Names(documents={7: "Bilan sanguin"}, messages={3: "Vos résultats"})


def entry(action: str, actor: str = f"patient:{OWN}", **detail: object) -> AuditEntry:
    return AuditEntry(id=1, at=datetime(2024, 3, 3, 9, 5, tzinfo=UTC), actor=actor, action=action, ins=OWN,
                      detail=dict(detail), prev_hash="0", hash="1")


@pytest.mark.parametrize("audit, expected", [
    (entry("deposit", f"professional:{LAB}", document=7, message=3, category="BIOLOGIE", author=LAB,
           author_name="Laboratoire Central"),
     "Laboratoire Central a déposé le document « Bilan sanguin » dans « Résultats de biologie »."),
    (entry("view-document", document=7), "Vous avez consulté le document « Bilan sanguin »."),
    (entry("download-document", document=7), "Vous avez téléchargé le document « Bilan sanguin »."),
    (entry("view-document", f"professional:{LAB}", document=7, author_name="Dr Martin"),
     "Dr Martin a consulté le document « Bilan sanguin »."),
    (entry("view-message", message=3), "Vous avez lu le message « Vos résultats »."),
    (entry("receive", "CN=operator", message=3, **{"from": LAB, "from_name": "Labo"}),
     "Labo vous a envoyé le message « Vos résultats »."),
    (entry("view-attachment", message=3, index=0), "Vous avez ouvert une pièce jointe du message « Vos résultats »."),
    (entry("download-attachment", message=99, index=0), "Vous avez téléchargé une pièce jointe d'un message."),
    (entry("file", document=7, message=3, index=0),
     "Vous avez enregistré le document « Bilan sanguin » dans vos documents."),
    (entry("mask", document=7), "Vous avez masqué le document « Bilan sanguin » aux professionnels de santé."),
    (entry("unmask", document=8), "Vous avez rendu un document visible aux professionnels de santé."),
    (entry("release", "operator:admin", document=7),
     "L'opérateur de messagerie a rendu le document « Bilan sanguin » visible dans votre espace."),
    (entry("send", message=3, to=[LAB]), f"Vous avez envoyé le message « Vos résultats » à {LAB}."),
    (entry("login", ip="192.0.2.1"), "Connexion à votre espace depuis l'adresse 192.0.2.1."),
    (entry("login-failed", ip="192.0.2.1", reason="password"),
     "Connexion refusée depuis l'adresse 192.0.2.1 (mot de passe incorrect)."),
    (entry("logout"), "Déconnexion de votre espace."),
    (entry("activate"), "Vous avez activé votre espace santé."),
    (entry("patient-state", "operator:admin", **{"from": "not_activated", "to": "active"}),
     "L'état de votre espace est passé de « en attente d'activation » à « activé »."),
    (entry("mdn-queued", message=3), "Un accusé de lecture est prêt pour le message « Vos résultats »."),
    (entry("notify", kind="document"), "Une notification vous a été envoyée (nouveau document)."),
    (entry("something-new", "CN=operator"), "Le service : action « something-new »."),
])
def test_sentences(audit: AuditEntry, expected: str) -> None:
    assert sentence(audit, OWN, NAMES) == expected


PARENT = INS["corsica"]  # reading OWN's space as their representative
OTHER = INS["closed"]  # another representative of OWN


@pytest.mark.parametrize("audit, reader, expected", [
    (entry("activate", f"representative:{PARENT}"), PARENT, "Vous avez activé l'espace santé."),
    (entry("activate", f"representative:{PARENT}"), OWN, "Votre représentant légal a activé votre espace santé."),
    (entry("activate", f"representative:{OTHER}"), PARENT, "Un autre représentant légal a activé l'espace santé."),
    (entry("view-document", f"representative:{PARENT}", document=7), PARENT,
     "Vous avez consulté le document « Bilan sanguin »."),
    (entry("view-document", f"representative:{PARENT}", document=7), OWN,
     "Votre représentant légal a consulté le document « Bilan sanguin »."),
    (entry("login"), PARENT, "Connexion à votre espace depuis l'adresse ?."),
    (entry("oppose", f"patient:{OWN}"), PARENT, "Le titulaire de l'espace a fait opposition à la création de "
                                                "l'espace santé."),
    (entry("oppose"), OWN, "Vous avez fait opposition à la création de votre espace santé."),
    (entry("close"), OWN, "Vous avez clôturé votre espace santé."),
    (entry("close", "operator:support"), OWN, "L'opérateur de messagerie a clôturé votre espace santé."),
    (entry("created-by-default", "mes_bridge"), OWN,
     "Votre espace a été créé par défaut à la fin du délai d'opposition."),
    (entry("delete"), OWN, "Vous avez demandé la suppression de votre espace santé."),
    (entry("purge", "mes_bridge", messages=3), OWN,
     "L'archive de l'espace a été détruite au terme de sa durée de conservation."),
    (entry("representative-add", "operator:admin", representative=PARENT), PARENT,
     "Vous êtes désormais représentant légal pour cet espace."),
    (entry("representative-add", "operator:admin", representative=PARENT), OWN,
     "Un représentant légal a été ajouté à l'espace."),
    (entry("activation-code", "operator:admin"), OWN, "Un nouveau code provisoire d'activation a été créé."),
    (entry("export"), OWN, "Vous avez téléchargé toutes les données de l'espace."),
    (entry("patient-state", "mes_bridge", **{"from": "pending", "to": "deleted"}), OWN,
     "L'état de votre espace est passé de « en attente (délai d'opposition) » à « supprimé »."),
    (entry("notify", "mes_bridge", kind="first-contact"), OWN,
     "Une notification vous a été envoyée (premier message d'un professionnel)."),
    (entry("notify", "mes_bridge", kind="created"), OWN, "Une notification vous a été envoyée (création de l'espace)."),
    (entry("notify", "mes_bridge", kind="deleted"), OWN,
     "Une notification vous a été envoyée (suppression de l'espace)."),
    (entry("lifecycle-new", f"representative:{PARENT}"), PARENT, "Vous : action « lifecycle-new »."),
])
def test_sentences_of_a_space_s_life_and_of_representatives(audit: AuditEntry, reader: str, expected: str) -> None:
    assert sentence(audit, reader, NAMES) == expected


def test_every_action_of_the_spec_has_a_sentence() -> None:
    spec = {"patient-add", "patient-state", "activate", "login-code-sent", "login", "login-failed", "logout", "receive",
            "deposit", "view-message", "view-document", "download-document", "view-attachment",
            "download-attachment", "file", "mask", "unmask", "release", "send", "mdn-queued", "mdn-sent", "notify",
            "oppose", "close", "created-by-default", "delete", "purge", "representative-add", "activation-code",
            "export"}
    assert spec <= set(PHRASES)
    for action in spec:
        assert sentence(entry(action), OWN, Names()).endswith(".")


def test_french_dates_and_sizes() -> None:
    assert date_fr(datetime(2024, 3, 3, 9, 5, tzinfo=UTC)) == "3 mars 2024 à 10 h 05"  # Paris, winter time
    assert date_fr(datetime(2024, 8, 1, 22, 30, tzinfo=UTC)) == "2 août 2024 à 0 h 30"  # summer time, next day
    assert date_fr(datetime(2024, 8, 1, 12, 0, tzinfo=UTC), time=False) == "1 août 2024"
    assert (size_fr(900), size_fr(2048), size_fr(3 * 1024 * 1024 + 1)) == ("900 octets", "2 Ko", "3,0 Mo")


space = module_space()


def test_history_page_tells_what_happened(space: WebSpace) -> None:
    message_id = deliver(space.store, "active", mail(sender=LAB, name="Laboratoire Central", subject="Vos résultats"),
                         documents=[pdf_document("Bilan sanguin"), pdf_document("Secret", hidden_from_patient=True)])
    browser = space.logged_in()
    browser.get(f"/messages/{message_id}")
    document = next(doc for doc in space.store.documents(OWN) if doc.title == "Bilan sanguin")
    browser.get(f"/documents/{document.id}/contenu")
    page = browser.get("/historique")
    assert page.status == 200 and 'aria-current="page">Historique' in page.text
    text = page.text
    for expected in ["Vous avez consulté le document « Bilan sanguin ».",
                     "Vous avez lu le message « Vos résultats ».",
                     "Laboratoire Central a déposé le document « Bilan sanguin » dans « Résultats de biologie ».",
                     "Laboratoire Central vous a envoyé le message « Vos résultats ».",
                     "Connexion à votre espace depuis l'adresse 127.0.0.1."]:
        assert expected in text
    assert "Secret" not in text and "a déposé un document" not in text
    assert text.index("consulté le document") < text.index("lu le message")  # newest first
