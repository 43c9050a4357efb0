"""The first message of every new space, "Bienvenue dans votre messagerie Mon espace santé".

It comes from the service itself, explains what the messaging is for, and cannot be answered: its
row is marked no-reply (no reply form, a reply refused) and it belongs to no conversation (no
professional's address), so it never opens a way to write to anyone.
"""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from mssante_base.patients.ins import Ins

from .store.records import MessageMeta

SUBJECT = "Bienvenue dans votre messagerie Mon espace santé"
FROM_NAME = "Mon espace santé"
FROM_ADDRESS = "ne-pas-repondre@monespacesante.invalid"  # never routed: the message cannot be answered

TEXT = """Bonjour,

Bienvenue dans votre messagerie Mon espace santé.

Cette messagerie sécurisée vous permet d'échanger avec les professionnels de santé qui vous suivent :
médecins, laboratoires, hôpitaux, pharmacies. Les documents qu'ils vous envoient (résultats d'analyse,
comptes rendus, ordonnances) peuvent être enregistrés dans vos documents de santé.

Un professionnel de santé doit vous écrire en premier : vous pouvez ensuite lui répondre, tant qu'il n'a
pas mis fin à l'échange. Vous pouvez aussi écrire à votre pharmacie.

Vous êtes prévenu(e) par e-mail de chaque nouveau message, sans que son contenu y figure. Vous pouvez à
tout moment télécharger toutes vos données ou demander la suppression de votre espace.

Ce message est envoyé automatiquement : il n'est pas possible d'y répondre.

— Mon espace santé
"""


def welcome_message(ins: Ins, at: datetime) -> tuple[bytes, MessageMeta]:
    """The welcome message addressed to ``ins``'s space, as bytes and as the store records it."""
    message = EmailMessage()
    message["From"] = f"{FROM_NAME} <{FROM_ADDRESS}>"
    message["To"] = ins.address
    message["Subject"] = SUBJECT
    message["Date"] = format_datetime(at)
    message_id = make_msgid(domain="monespacesante.invalid")
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(TEXT)
    meta = MessageMeta(message_id=message_id, sender=FROM_ADDRESS, recipients=(ins.address,), subject=SUBJECT,
                       from_address="", from_name=FROM_NAME, sent_at=at)
    return message.as_bytes(), meta
