"""One mail transaction as the listeners' checks see it, kept in one place.

A :class:`Transaction` is made at MAIL (the session's TLS identity and principal, the sender and its
parameters), grows by one :class:`Recipient` per accepted RCPT (with its route and, for a patient, the
INS), and at DATA holds the message bytes, its header summary (parsed once, on first use) and the queue
id. It lives on aiosmtpd's envelope under one attribute, so it is reset with the envelope (RSET, HELO,
after DATA). The session-wide identities (the peer's certificate, set after the TLS handshake, and the
principal, set by AUTH) are read and written only through the accessors here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiosmtpd.smtp import Envelope, Session

from mssante_base.message import dsn, headers
from mssante_base.patients.ins import Ins
from mssante_base.trust.tls import PeerTls

from ..auth.authenticator import Principal
from .router import Route, Target

if TYPE_CHECKING:
    from mssante_base.annuaire import MailboxEntry

    from ..trust_space.dkim import DkimResult

_ATTRIBUTE = "mss_transaction"  # the one attribute we set on aiosmtpd's envelope


@dataclass
class Recipient:
    """One recipient: its address (lower-cased), where it goes, and what the checks learnt about it."""

    address: str
    route: Route | None = None
    ins: Ins | None = None  # a patient recipient's INS
    dsn: dsn.RcptParameters = field(default_factory=lambda: dsn.RcptParameters(None, None))


@dataclass
class Transaction:
    """The current mail transaction of a session (see the module docstring)."""

    peer: PeerTls | None
    principal: Principal | None
    mail_from: str
    mail_options: list[str] = field(default_factory=list)
    dsn: dsn.MailParameters = field(default_factory=lambda: dsn.MailParameters(None, None))
    recipients: dict[str, Recipient] = field(default_factory=dict)  # in RCPT order
    queue_id: str = ""
    data: bytes = b""
    dkim: list[DkimResult] = field(default_factory=list)  # the MTA's verification results
    author: MailboxEntry | None = None  # the annuaire entry of the From of a message to patients (MTA)
    _summary: headers.HeaderSummary | None = field(default=None, repr=False)

    @property
    def summary(self) -> headers.HeaderSummary:
        """From, Sender, Subject and Message-ID of :attr:`data`, parsed once."""
        if self._summary is None:
            self._summary = headers.summarise(self.data)
        return self._summary

    @property
    def patients(self) -> dict[str, Ins]:
        """The patient recipients and their INS, in RCPT order."""
        return {a: r.ins for a, r in self.recipients.items() if r.ins is not None}

    def addresses(self, *targets: Target) -> tuple[str, ...]:
        """The recipients routed to one of ``targets``, in RCPT order."""
        return tuple(a for a, r in self.recipients.items() if r.route is not None and r.route.target in targets)


def begin(envelope: Envelope, transaction: Transaction) -> None:
    """Keep ``transaction`` as the envelope's (at MAIL); it goes when aiosmtpd makes a new envelope."""
    setattr(envelope, _ATTRIBUTE, transaction)


def current(envelope: Envelope) -> Transaction:
    """The envelope's transaction (aiosmtpd asks for MAIL before RCPT and DATA, so there is one)."""
    transaction = getattr(envelope, _ATTRIBUTE, None)
    assert isinstance(transaction, Transaction), "RCPT or DATA before an accepted MAIL"
    return transaction


def principal_of(session: Session) -> Principal | None:
    """Who the session authenticated as; None before AUTH."""
    return getattr(session, "principal", None)


def set_principal(session: Session, principal: Principal) -> None:
    session.principal = principal  # type: ignore[attr-defined]
