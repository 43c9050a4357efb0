"""The trust space in force: liste blanche and CRLs, reloaded together without dropping connections.

Sessions ask for the current lists at each check, so a reload (timer or SIGHUP) applies to the next
MAIL command of every connection, and an unusable new file never replaces a good one.
"""

from __future__ import annotations

import logging

from mssante_base.trust.revocation import RevocationError, RevocationLists, load_certificates

from ..config import Settings
from .liste_blanche import ListeBlanche, ListeBlancheHolder

log = logging.getLogger(__name__)


class TrustSpace:
    """Liste blanche + revocation lists of the trust CA bundle."""

    def __init__(self, settings: Settings) -> None:
        ts = settings.trust_space
        self._ca_bundle = settings.path(ts.ca_bundle)
        self._crl_files = [settings.path(p) for p in ts.crl_files]
        self._liste = ListeBlancheHolder(settings.path(ts.liste_blanche))
        self._revocations: RevocationLists | None = None
        self.reload(initial=True)

    def liste_blanche(self) -> ListeBlanche:
        return self._liste.current

    def revocations(self) -> RevocationLists:
        assert self._revocations is not None
        return self._revocations

    def reload(self, *, initial: bool = False) -> None:
        """Re-read the liste blanche and the CRLs; at start-up a bad file is fatal, later it is logged."""
        self._liste.reload()
        try:
            fresh = RevocationLists.load(self._crl_files, load_certificates(self._ca_bundle))
        except RevocationError:
            if initial:
                raise
            log.exception("CRLs not reloaded, keeping the last good ones")
            return
        for issuer in fresh.stale_issuers():
            log.warning("CRL of %s is past its nextUpdate; fetch a fresh one", issuer)
        self._revocations = fresh
