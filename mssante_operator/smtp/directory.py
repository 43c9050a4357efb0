"""The listeners' one way to ask the annuaire about a mailbox: unreachable means ``451 4.4.3``."""

from __future__ import annotations

import logging

from mssante_base.annuaire import Annuaire, AnnuaireUnavailable, MailboxEntry
from mssante_base.smtp.replies import PrintableLog

from . import policy

log = logging.getLogger(__name__)
log.addFilter(PrintableLog())  # the backend's reason may quote the address


async def lookup_mailbox(annuaire: Annuaire, address: str) -> MailboxEntry | None:
    """The annuaire's entry for ``address`` (None: no such mailbox); raises ``policy.ANNUAIRE_DOWN`` when the
    annuaire cannot answer now, so the client tries again later."""
    try:
        return await annuaire.lookup(address)
    except AnnuaireUnavailable as exc:
        log.warning("annuaire unavailable: %s", exc)
        raise policy.ANNUAIRE_DOWN from None
