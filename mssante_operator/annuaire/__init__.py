"""The annuaire: who owns which mailbox (PER, ORG, APP), consulted by every policy check."""

from .base import Annuaire, AnnuaireUnavailable, BalKind, MailboxEntry

__all__ = ["Annuaire", "AnnuaireUnavailable", "BalKind", "MailboxEntry"]
