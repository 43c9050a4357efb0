"""The second step of a patient's login: a one-time code sent to the notification outbox, then checked."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update

from mssante_base.patients import codes

from .core import now
from .notifications import SIGNATURE, NotificationStore
from .records import LoginChallenge
from .schema import BridgeLoginChallenge

_TABLE = BridgeLoginChallenge.__table__


class LoginStore(NotificationStore):
    def start_login(self, ins: str, *, code: str, ttl_seconds: int = 600, ip: str) -> str:
        """A challenge for ``ins`` (its id), the code sent as a notice; expired challenges are swept."""
        challenge_id = secrets.token_urlsafe(32)
        at = now()
        with self._writing() as conn:
            conn.execute(delete(_TABLE).where(_TABLE.c.expires_at < at))
            conn.execute(_TABLE.insert().values(id=challenge_id, ins=ins, code_hash=codes.hash_code(code),
                                                expires_at=at + timedelta(seconds=ttl_seconds), attempts=0))
            minutes = max(1, ttl_seconds // 60)
            self._notify(conn, ins, "login-code", "Votre code de connexion à Mon espace santé",
                         f"Bonjour,\n\nVotre code de connexion est : {code}\n\nIl est valable {minutes} minutes. "
                         "Si vous n'êtes pas à l'origine de cette demande, ne le communiquez à personne."
                         + SIGNATURE, require_email=False)
            self._audit(conn, actor=f"patient:{ins}", action="login-code-sent", ins=ins, detail={"ip": ip}, at=at)
        return challenge_id

    def login_challenge(self, challenge_id: str) -> LoginChallenge | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(_TABLE).where(_TABLE.c.id == challenge_id)).first()
        if row is None or row.expires_at < now():
            return None
        return LoginChallenge(id=row.id, ins=row.ins, code_hash=row.code_hash, expires_at=row.expires_at,
                              attempts=row.attempts)

    def login_attempt_failed(self, challenge_id: str) -> int:
        with self._writing() as conn:
            attempts = conn.execute(update(_TABLE).where(_TABLE.c.id == challenge_id)
                                    .values(attempts=_TABLE.c.attempts + 1).returning(_TABLE.c.attempts)).scalar()
        return int(attempts or 0)

    def drop_login(self, challenge_id: str) -> None:
        with self._writing() as conn:
            conn.execute(delete(_TABLE).where(_TABLE.c.id == challenge_id))

    def finish_login(self, challenge_id: str, *, ip: str) -> None:
        """The code was right: the challenge is spent and the login audited."""
        with self._writing() as conn:
            ins = conn.execute(delete(_TABLE).where(_TABLE.c.id == challenge_id).returning(_TABLE.c.ins)).scalar()
            if ins is not None:
                self._audit(conn, actor=f"patient:{ins}", action="login", ins=ins, detail={"ip": ip})

    def audit_event(self, ins: str | None, action: str, *, actor: str, detail: dict[str, Any]) -> None:
        """Append any other event to the audit chain (login-failed, logout …)."""
        with self._writing() as conn:
            self._audit(conn, actor=actor, action=action, ins=ins, detail=detail)

    def record_access(self, ins: str, action: str, *, actor: str, detail: dict[str, Any]) -> None:
        """A view or download of a document or attachment, appended to the audit chain."""
        self.audit_event(ins, action, actor=actor, detail=detail)
