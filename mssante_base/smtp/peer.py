"""The TLS identity of an SMTP session's client, kept on aiosmtpd's session by the hardened server."""

from __future__ import annotations

from aiosmtpd.smtp import Session

from mssante_base.trust.tls import PeerTls


def peer_of(session: Session) -> PeerTls | None:
    """The TLS identity of the session's client; None before TLS."""
    return getattr(session, "peer_tls", None)


def set_peer(session: Session, peer: PeerTls | None) -> None:
    session.peer_tls = peer  # type: ignore[attr-defined]

