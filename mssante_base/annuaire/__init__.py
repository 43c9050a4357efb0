"""The annuaire, who owns which mailbox (PER, ORG, APP): the Annuaire interface that policies use, whatever
the backend (file_backend, ldap_backend behind cache), opened by factory from [annuaire] (settings)."""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from mssante_base.errors import TemporaryFailure

ORIGIN_LOCAL = "local"  # entered by this operator (demo kit, liste rouge, delegates)
ORIGIN_EXTRACTION = "extraction"  # imported from the national "Extraction Correspondance MSSanté"


class BalKind(enum.StrEnum):
    """MSSanté mailbox ("BAL") types."""

    PER = "PER"  # personal, one professional (RPPS)
    ORG = "ORG"  # organisational, shared by delegates
    APP = "APP"  # applicative: sends, never receives
    CAB = "CAB"  # practice mailbox (still being specified by ANS)


@dataclass(frozen=True, slots=True)  # slots: a 100,000-entry file annuaire stays small in memory
class MailboxEntry:
    """One mailbox of the annuaire, with the attributes policies rely on."""

    address: str
    kind: BalKind
    display_name: str = ""
    rpps: str | None = None  # national PP identifier (PER)
    structure_id: str | None = None  # FINESS / SIRET (ORG, APP)
    service: str | None = None
    profession_code: str | None = None
    profession_label: str | None = None
    liste_rouge: bool = False  # deliverable, but never disclosed by a search
    dematerialisation: bool = True
    pharmacy: bool = False  # an officine's ORG mailbox (patients may write first)
    delegates: tuple[str, ...] = field(default=())
    origin: str = ORIGIN_LOCAL  # ORIGIN_EXTRACTION: written by `annuaire import` (only those are pruned)

    @property
    def can_receive(self) -> bool:
        """APP mailboxes only send (lab systems); everything else receives."""
        return self.kind is not BalKind.APP

    def to_json(self) -> dict[str, object]:
        """The entry as plain JSON data (file backend, `annuaire show`)."""
        return {
            "address": self.address,
            "kind": self.kind.value,
            "display_name": self.display_name,
            "rpps": self.rpps,
            "structure_id": self.structure_id,
            "service": self.service,
            "profession_code": self.profession_code,
            "profession_label": self.profession_label,
            "liste_rouge": self.liste_rouge,
            "dematerialisation": self.dematerialisation,
            "pharmacy": self.pharmacy,
            "delegates": list(self.delegates),
            "origin": self.origin,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> MailboxEntry:
        """Build an entry from :meth:`to_json` data; raises ValueError/KeyError on bad data."""
        delegates = data.get("delegates") or []
        if not isinstance(delegates, list):
            raise ValueError("delegates must be a list of addresses")

        def text(key: str) -> str | None:
            value = data.get(key)
            return None if value in (None, "") else str(value)

        return cls(
            address=str(data["address"]).strip().lower(),
            kind=BalKind(str(data["kind"]).upper()),
            display_name=str(data.get("display_name") or ""),
            rpps=text("rpps"),
            structure_id=text("structure_id"),
            service=text("service"),
            profession_code=text("profession_code"),
            profession_label=text("profession_label"),
            liste_rouge=bool(data.get("liste_rouge", False)),
            dematerialisation=bool(data.get("dematerialisation", True)),
            pharmacy=bool(data.get("pharmacy", False)),
            delegates=tuple(str(d).strip().lower() for d in delegates),
            origin=str(data.get("origin") or ORIGIN_LOCAL),
        )


MIN_SEARCH_LENGTH = 2


def search_text(text: str) -> str | None:
    """The text of a search, or None when it cannot match a mailbox (too short, control characters):
    such a search must not reach a directory, where it could list everything."""
    text = text.strip()
    if len(text) < MIN_SEARCH_LENGTH or any(ord(c) < 32 or ord(c) == 127 for c in text):
        return None
    return text


class AnnuaireUnavailable(TemporaryFailure):
    """The directory could not answer (down, slow): callers answer 4xx, never a permanent refusal."""


class Annuaire(ABC):
    """Looks mailboxes up by address. Implementations must be safe to call from the event loop."""

    @abstractmethod
    async def lookup(self, address: str) -> MailboxEntry | None:
        """The entry for ``address`` (case-insensitive), or None when unknown.

        Raises AnnuaireUnavailable when the directory cannot answer now (as do the methods below).
        Liste rouge entries are found: they receive mail and log in like any other.
        """

    @abstractmethod
    async def search(self, text: str, limit: int = 50) -> list[MailboxEntry]:
        """Published mailboxes whose address or name contains ``text``: never a liste rouge entry."""

    @abstractmethod
    async def by_rpps(self, rpps: str) -> list[MailboxEntry]:
        """The mailboxes of one professional (certificate and token logins map an RPPS to them)."""

    @abstractmethod
    async def by_structure(self, structure_id: str) -> list[MailboxEntry]:
        """The mailboxes of one structure (FINESS/SIRET): an APP certificate's OU maps to them."""

    @abstractmethod
    async def delegated_to(self, address: str) -> list[MailboxEntry]:
        """The ORG mailboxes that ``address`` is a delegate of (may open them and send from them)."""

    async def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections."""
