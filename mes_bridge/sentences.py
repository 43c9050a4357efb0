"""The audit trail told to the patient: one French sentence per entry.

Who acted comes from the entry's actor, told to whoever reads the history (``own_ins``: the patient,
or the parent reading a child's space): "patient:<INS>" or "representative:<INS>" is "Vous" for the
reader's own entries; a representative is otherwise "Votre représentant légal" (to the space's owner)
or "Un autre représentant légal" (to another parent); a professional is named as the entry recorded
them. What was acted on is named by the titles and subjects looked up for the reader (``Names``), since
the chain itself keeps ids only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mssante_base.patients.states import PatientState

from .filing.categories import Category
from .french import date_fr
from .store import AuditEntry

STATE_LABELS = {PatientState.PENDING: "en attente (délai d'opposition)", PatientState.ACTIVE: "activé",
                PatientState.NOT_ACTIVATED: "en attente d'activation",
                PatientState.OPPOSED: "opposition à sa création", PatientState.CLOSED: "clôturé",
                PatientState.DELETED: "supprimé"}
NOTIFY_LABELS = {"message": "nouveau message", "document": "nouveau document", "login-code": "code de connexion",
                 "activation": "activation", "first-access": "premier accès d'un professionnel",
                 "first-contact": "premier message d'un professionnel", "created": "création de l'espace",
                 "deleted": "suppression de l'espace"}
FAILURE_LABELS = {"password": "mot de passe incorrect", "code": "code de connexion incorrect"}


@dataclass(frozen=True)
class Names:
    """What the patient may see of the ids an entry holds (a document hidden from them is absent)."""

    documents: dict[int, str] = field(default_factory=dict)  # id -> title
    messages: dict[int, str] = field(default_factory=dict)  # id -> subject

    def document(self, detail: dict[str, Any]) -> str:
        title = self.documents.get(_int(detail.get("document")))
        return f"le document « {title} »" if title else "un document"

    def message(self, detail: dict[str, Any]) -> str:
        subject = self.messages.get(_int(detail.get("message")))
        return f"le message « {subject} »" if subject else "un message"

    def of_message(self, detail: dict[str, Any]) -> str:
        subject = self.messages.get(_int(detail.get("message")))
        return f"du message « {subject} »" if subject else "d'un message"


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def who(entry: AuditEntry, own_ins: str) -> str:
    """The actor as a sentence's subject ("Vous", a representative, a professional's name, "L'opérateur",
    "Le service"); ``own_ins`` is the reader's INS."""
    kind, _, rest = entry.actor.partition(":")
    if kind in ("patient", "representative") and rest == own_ins:
        return "Vous"
    if kind == "patient":
        return "Le titulaire de l'espace" if rest == entry.ins else "Un autre patient"
    if kind == "representative":
        return "Votre représentant légal" if entry.ins == own_ins else "Un autre représentant légal"
    if kind == "professional":
        detail = entry.detail
        return str(detail.get("author_name") or detail.get("from_name") or rest)
    if kind == "operator":
        return "L'opérateur de messagerie"
    return "Le service"


def _did(entry: AuditEntry, own_ins: str, past: str) -> str:
    """« Vous avez consulté » / « Dr X a consulté »."""
    subject = who(entry, own_ins)
    return f"{subject} {'avez' if subject == 'Vous' else 'a'} {past}"


def _space(entry: AuditEntry, own_ins: str) -> str:
    """« votre espace santé » for the space's owner, « l'espace santé » for a parent reading a child's."""
    return "votre espace santé" if entry.ins == own_ins else "l'espace santé"


def _representative(entry: AuditEntry, own_ins: str) -> str:
    if entry.detail.get("representative") == own_ins:
        return "Vous êtes désormais représentant légal pour cet espace."
    return "Un représentant légal a été ajouté à l'espace."


def _state(value: Any) -> str:
    try:
        return STATE_LABELS.get(PatientState(str(value)), str(value))
    except ValueError:
        return str(value)


Phrase = Callable[[AuditEntry, str, Names], str]
d = _did  # short: the table below stays one line per action

PHRASES: dict[str, Phrase] = {
    "patient-add": lambda e, i, n: "Votre espace santé a été créé.",
    "patient-state": lambda e, i, n: (f"L'état de votre espace est passé de « {_state(e.detail.get('from'))} » "
                                      f"à « {_state(e.detail.get('to'))} »."),
    "activate": lambda e, i, n: f"{d(e, i, 'activé')} {_space(e, i)}.",
    "oppose": lambda e, i, n: f"{d(e, i, 'fait')} opposition à la création de {_space(e, i)}.",
    "close": lambda e, i, n: f"{d(e, i, 'clôturé')} {_space(e, i)}.",
    "created-by-default": lambda e, i, n: (f"{'Votre' if e.ins == i else 'Cet'} espace a été créé par défaut à la "
                                           "fin du délai d'opposition."),
    "delete": lambda e, i, n: f"{d(e, i, 'demandé')} la suppression de {_space(e, i)}.",
    "purge": lambda e, i, n: "L'archive de l'espace a été détruite au terme de sa durée de conservation.",
    "representative-add": lambda e, i, n: _representative(e, i),
    "export": lambda e, i, n: f"{d(e, i, 'téléchargé')} toutes les données de l'espace.",
    "activation-code": lambda e, i, n: "Un nouveau code provisoire d'activation a été créé.",
    "password": lambda e, i, n: "Le mot de passe de votre espace a été changé.",
    "email": lambda e, i, n: "L'adresse e-mail de notification a été changée.",
    "login-code-sent": lambda e, i, n: "Un code de connexion vous a été envoyé.",
    "login": lambda e, i, n: f"Connexion à votre espace depuis l'adresse {e.detail.get('ip', '?')}.",
    "login-failed": lambda e, i, n: (f"Connexion refusée depuis l'adresse {e.detail.get('ip', '?')} "
                                     f"({FAILURE_LABELS.get(str(e.detail.get('reason')), 'refus')})."),
    "logout": lambda e, i, n: "Déconnexion de votre espace.",
    "receive": lambda e, i, n: (f"{e.detail.get('from_name') or e.detail.get('from') or 'Un professionnel'} "
                                f"vous a envoyé {n.message(e.detail)}."),
    "deposit": lambda e, i, n: (f"{e.detail.get('author_name') or e.detail.get('author') or 'Un professionnel'} "
                                f"a déposé {n.document(e.detail)}{_in_category(e.detail)}."),
    "view-message": lambda e, i, n: f"{d(e, i, 'lu')} {n.message(e.detail)}.",
    "view-document": lambda e, i, n: f"{d(e, i, 'consulté')} {n.document(e.detail)}.",
    "download-document": lambda e, i, n: f"{d(e, i, 'téléchargé')} {n.document(e.detail)}.",
    "view-attachment": lambda e, i, n: f"{d(e, i, 'ouvert')} une pièce jointe {n.of_message(e.detail)}.",
    "download-attachment": lambda e, i, n: f"{d(e, i, 'téléchargé')} une pièce jointe {n.of_message(e.detail)}.",
    "file": lambda e, i, n: f"{d(e, i, 'enregistré')} {n.document(e.detail)} dans vos documents.",
    "mask": lambda e, i, n: f"{d(e, i, 'masqué')} {n.document(e.detail)} aux professionnels de santé.",
    "unmask": lambda e, i, n: f"{d(e, i, 'rendu')} {n.document(e.detail)} visible aux professionnels de santé.",
    "release": lambda e, i, n: f"{d(e, i, 'rendu')} {n.document(e.detail)} visible dans votre espace.",
    "send": lambda e, i, n: f"{d(e, i, 'envoyé')} {n.message(e.detail)}{_to(e.detail)}.",
    "mdn-queued": lambda e, i, n: f"Un accusé de lecture est prêt pour {n.message(e.detail)}.",
    "mdn-sent": lambda e, i, n: f"L'accusé de lecture pour {n.message(e.detail)} a été envoyé.",
    "notify": lambda e, i, n: (f"Une notification vous a été envoyée "
                               f"({NOTIFY_LABELS.get(str(e.detail.get('kind')), 'information')})."),
}
PHRASES["deliver"] = PHRASES["receive"]


def _in_category(detail: dict[str, Any]) -> str:
    try:
        return f" dans « {Category(str(detail.get('category'))).label} »"
    except ValueError:
        return ""


def _to(detail: dict[str, Any]) -> str:
    to = detail.get("to")
    if isinstance(to, list):
        to = ", ".join(str(address) for address in to)
    return f" à {to}" if to else ""


def sentence(entry: AuditEntry, own_ins: str, names: Names) -> str:
    """The entry as a French sentence (an unknown action is named, never hidden)."""
    phrase = PHRASES.get(entry.action)
    if phrase is None:
        return f"{who(entry, own_ins)} : action « {entry.action} »."
    return phrase(entry, own_ins, names)


def dated(entry: AuditEntry) -> str:
    return f"Le {date_fr(entry.at)}"
