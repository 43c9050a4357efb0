"""Notices for the patient's personal address, kept in an outbox table: they say that something arrived,
never what (no sender, subject, title or content), as a personal mailbox is not a health-data host."""

from __future__ import annotations

from datetime import date

from sqlalchemy import Connection, select

from . import rows
from .core import now
from .patients import PatientStore
from .records import Notification
from .schema import BridgeNotification, BridgePatient

_TABLE = BridgeNotification.__table__
SIGNATURE = "\n\nCe courriel ne contient aucune information de santé. — Mon espace santé"


def new_items_text(messages: int, documents: int) -> tuple[str, str]:
    """Subject and body of the notice for new messages and documents (counts only)."""
    parts = []
    if messages:
        parts.append("un nouveau message" if messages == 1 else f"{messages} nouveaux messages")
    if documents:
        parts.append("un nouveau document" if documents == 1 else f"{documents} nouveaux documents")
    subject = "Nouveau message dans Mon espace santé" if messages else "Nouveau document dans Mon espace santé"
    body = (f"Bonjour,\n\nVous avez {' et '.join(parts)} dans votre espace santé. "
            "Connectez-vous à votre espace pour en prendre connaissance." + SIGNATURE)
    return subject, body


FIRST_CONTACT = (
    "Un nouveau professionnel de santé vous a écrit",
    "Bonjour,\n\nUn professionnel de santé vous écrit pour la première fois dans votre messagerie Mon espace "
    "santé. Connectez-vous à votre espace pour prendre connaissance de son message." + SIGNATURE,
)
SPACE_CREATED = (
    "Votre espace Mon espace santé est créé",
    "Bonjour,\n\nSans opposition de votre part, votre espace Mon espace santé a été créé. Les professionnels "
    "de santé peuvent désormais vous y écrire. Vous pouvez l'activer à tout moment pour lire vos messages, "
    "ou le clôturer." + SIGNATURE,
)


class NotificationStore(PatientStore):
    def _notify(self, conn: Connection, ins: str, kind: str, subject: str, body: str, *,
                require_email: bool = True) -> int | None:
        """Queue a notice for the patient's address, or for a child's, their representatives' (none without
        an address, unless not required); the last notice's id."""
        email = conn.execute(select(BridgePatient.email).where(BridgePatient.ins == ins)).scalar()
        emails: list[str | None] = [email] if email else list(self._representative_emails(conn, ins, date.today()))
        if not emails and not require_email:
            emails = [None]
        notice_id = None
        for address in emails:
            notice_id = conn.execute(_TABLE.insert().values(
                ins=ins, email=address, kind=kind, subject=subject, body=body, created_at=now(),
            ).returning(_TABLE.c.id)).scalar_one()
            self._audit(conn, actor="mes_bridge", action="notify", ins=ins, detail={"kind": kind, "notice": notice_id})
        return notice_id

    def notifications(self, ins: str | None = None) -> list[Notification]:
        query = select(_TABLE).order_by(_TABLE.c.id)
        if ins is not None:
            query = query.where(_TABLE.c.ins == ins)
        with self._engine.connect() as conn:
            return [rows.notification(row) for row in conn.execute(query)]
