"""The ANS liste blanche: which domains belong to the trust space, served by which certificate DNs.

The XML (``ListeBlancheMSSante``) lists one ``Domaine`` per (domain, operator server certificate);
a domain served by several servers appears several times. Parsing is pure; loading and reloading
live in :class:`ListeBlancheHolder`, which keeps the last good list when a new file is malformed.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from xml.parsers import expat

from mssante_base.trust.dn import NormalDn, parse_dn

log = logging.getLogger(__name__)

NAMESPACE = "https://listeblanche.mssante.fr/schema"


@dataclass(frozen=True)
class ListedDomain:
    """One ``Domaine`` element: a domain and the DN of one server certificate that serves it."""

    name: str
    dn_text: str
    description: str = ""
    support_contact: str = ""
    responsable_contact: str = ""
    updated: str = ""


class ListeBlancheError(ValueError):
    """The document is not a usable liste blanche."""


def normalise_domain(domain: str) -> str:
    """Lower-case, IDNA-free comparison form of a domain (names may contain non-ASCII letters)."""
    return domain.strip().rstrip(".").casefold()


@dataclass(frozen=True)
class ListeBlanche:
    """An immutable, queryable liste blanche."""

    generated: datetime | None
    domains: Mapping[str, frozenset[NormalDn]]
    entries: tuple[ListedDomain, ...]

    def is_listed(self, domain: str) -> bool:
        return normalise_domain(domain) in self.domains

    def dn_allowed(self, domain: str, dn: NormalDn) -> bool:
        """True when ``dn`` is one of the certificate DNs listed for ``domain``."""
        return dn in self.domains.get(normalise_domain(domain), frozenset())

    def __len__(self) -> int:
        return len(self.entries)


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _child_text(element: ET.Element, name: str) -> str:
    for child in element:
        if _local(child.tag) == name:
            return (child.text or "").strip()
    return ""


def _refuse_dtd(data: bytes) -> None:
    """Raise when the document declares a DTD or entities (entity expansion bombs, external fetches).

    The check runs in expat itself rather than on the raw bytes, so that a document in another
    encoding (UTF-16 hides ``<!DOCTYPE`` from a byte search) cannot slip a DTD past it.
    """

    def refuse(*_: object) -> None:
        raise ListeBlancheError("DTDs and entities are not accepted in a liste blanche")

    scanner = expat.ParserCreate()
    scanner.StartDoctypeDeclHandler = refuse
    scanner.EntityDeclHandler = refuse
    try:
        scanner.Parse(data, True)
    except expat.ExpatError as exc:
        raise ListeBlancheError(f"malformed XML: {expat.ErrorString(exc.code)}: line {exc.lineno}, "
                                f"column {exc.offset}") from exc


def parse_liste_blanche(data: bytes) -> ListeBlanche:
    """Parse the XML bytes; raises ListeBlancheError with the reason when it is not usable.

    Elements are matched by local name so that the namespace (or its absence) does not matter.
    A ``Domaine`` whose DN cannot be parsed is skipped with a log line, not fatal.
    """
    _refuse_dtd(data)
    try:
        root = ET.fromstring(data)  # noqa: S314 - DTD/entities refused above
    except ET.ParseError as exc:
        raise ListeBlancheError(f"malformed XML: {exc}") from exc
    if _local(root.tag) != "ListeBlancheMSSante":
        raise ListeBlancheError(f"root element is {_local(root.tag)!r}, expected 'ListeBlancheMSSante'")
    generated_text = _child_text(root, "DateDeGeneration")
    generated = None
    if generated_text:
        try:
            generated = datetime.fromisoformat(generated_text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ListeBlancheError(f"DateDeGeneration {generated_text!r} is not a date") from exc
    entries: list[ListedDomain] = []
    domains: dict[str, set[NormalDn]] = {}
    for element in root.iter():
        if _local(element.tag) != "Domaine":
            continue
        entry = ListedDomain(
            name=_child_text(element, "Nom"),
            dn_text=_child_text(element, "DNCertificatOperateur"),
            description=_child_text(element, "Description"),
            responsable_contact=_child_text(element, "ResponsableContact"),
            support_contact=_child_text(element, "SupportContact"),
            updated=_child_text(element, "DateMAJ"),
        )
        if not entry.name or not entry.dn_text:
            log.warning("liste blanche: Domaine without Nom or DNCertificatOperateur skipped")
            continue
        try:
            dn = parse_dn(entry.dn_text)
        except ValueError as exc:
            log.warning("liste blanche: domain %s has an unreadable DN (%s), skipped", entry.name, exc)
            continue
        entries.append(entry)
        domains.setdefault(normalise_domain(entry.name), set()).add(dn)
    if not entries:
        raise ListeBlancheError("no usable Domaine element")
    return ListeBlanche(
        generated=generated,
        domains={name: frozenset(dns) for name, dns in domains.items()},
        entries=tuple(entries),
    )


def render_liste_blanche(entries: Iterable[ListedDomain], generated: datetime) -> bytes:
    """Write entries in the ANS XML format (used by the demo kit and by tests)."""
    ET.register_namespace("", NAMESPACE)
    root = ET.Element(f"{{{NAMESPACE}}}ListeBlancheMSSante")
    ET.SubElement(root, f"{{{NAMESPACE}}}DateDeGeneration").text = generated.strftime("%Y-%m-%dT%H:%M:%SZ")
    listing = ET.SubElement(root, f"{{{NAMESPACE}}}ListeDomaines")
    for entry in entries:
        domain = ET.SubElement(listing, f"{{{NAMESPACE}}}Domaine")
        for tag, value in (
            ("Nom", entry.name),
            ("Description", entry.description),
            ("DNCertificatOperateur", entry.dn_text),
            ("ResponsableContact", entry.responsable_contact),
            ("SupportContact", entry.support_contact),
            ("DateMAJ", entry.updated),
        ):
            ET.SubElement(domain, f"{{{NAMESPACE}}}{tag}").text = value
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


class ListeBlancheHolder:
    """The current liste blanche of a file, reloaded on demand; a bad file keeps the last good list."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._current: ListeBlanche | None = None

    @property
    def current(self) -> ListeBlanche:
        if self._current is None:
            raise ListeBlancheError(f"{self.path}: no liste blanche loaded")
        return self._current

    def reload(self) -> bool:
        """Read the file again. Returns True when a new list is in force, False when the old one stays.

        The first load raises when the file is unusable: starting without a trust space would refuse
        every peer, which an operator must see at once.
        """
        try:
            fresh = parse_liste_blanche(self.path.read_bytes())
        except (OSError, ListeBlancheError) as exc:
            if self._current is None:
                raise ListeBlancheError(f"{self.path}: {exc}") from exc
            log.error("liste blanche %s not reloaded, keeping the last good list: %s", self.path, exc)
            return False
        self._current = fresh
        log.info(
            "liste blanche loaded: %d entries, %d domains, generated %s",
            len(fresh.entries), len(fresh.domains), fresh.generated,
        )
        return True
