"""Pure translation between MailboxEntry and LDAP attributes, and the escaped filters and DNs.

Every value that reaches a filter goes through ``escape_filter_chars`` and every value in a DN
through ``escape_rdn`` (ldap3's RFC 4515 / RFC 4514 escaping): an address such as
``*)(mail=*`` must match nothing rather than everything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields

from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from mssante_base.annuaire import ORIGIN_LOCAL, BalKind, MailboxEntry
from mssante_base.annuaire.settings import LdapAttributes

_BOOLEAN_FIELDS = {"liste_rouge": False, "dematerialisation": True, "pharmacy": False}  # absent: the default
_TEXT_FIELDS = ("display_name", "rpps", "structure_id", "service", "profession_code", "profession_label", "origin")
_PERSON_CLASSES = {"person", "organizationalperson", "inetorgperson"}

LdapValues = dict[str, list[str]]


def escape(value: str) -> str:
    """A value made safe for the inside of an LDAP filter."""
    return str(escape_filter_chars(value))


def equality(attribute: str, value: str) -> str:
    return f"({attribute}={escape(value)})"


def all_of(*parts: str) -> str:
    return "(&" + "".join(parts) + ")"


def any_of(parts: Iterable[str]) -> str:
    return "(|" + "".join(parts) + ")"


def entry_dn(address: str, attributes: LdapAttributes, base_dn: str) -> str:
    """The DN of a new entry: its address as RDN, under the base."""
    return f"{attributes.address}={escape_rdn(address)},{base_dn}"


def requested_attributes(attributes: LdapAttributes) -> list[str]:
    """Every mapped attribute: one per field of MailboxEntry."""
    return [getattr(attributes, f.name) for f in fields(MailboxEntry)]


def to_ldap(entry: MailboxEntry, attributes: LdapAttributes, object_classes: Sequence[str]) -> LdapValues:
    """Attribute values for ``entry`` (absent fields as empty lists, so a modify removes them)."""
    values: LdapValues = {
        attributes.address: [entry.address],
        attributes.kind: [entry.kind.value],
        attributes.delegates: list(entry.delegates),
    }
    for name in _TEXT_FIELDS:
        value = getattr(entry, name)
        values[getattr(attributes, name)] = [value] if value else []
    for name, default in _BOOLEAN_FIELDS.items():  # written only when not the default: less to encode
        value = getattr(entry, name)
        values[getattr(attributes, name)] = [] if value == default else ["TRUE" if value else "FALSE"]
    classes = {c.lower() for c in object_classes}
    if _PERSON_CLASSES & classes:  # person requires cn and sn
        label = entry.display_name or entry.address
        values["cn"] = [label]
        values["sn"] = [label]
    if "inetorgperson" in classes and attributes.address.lower() != "mail":
        # address books and mail clients read `mail`; it only takes ASCII (IA5String)
        values["mail"] = [entry.address] if entry.address.isascii() else []
    return values


def from_ldap(values: Mapping[str, object], attributes: LdapAttributes) -> MailboxEntry:
    """A MailboxEntry from a search result's attributes; raises ValueError on an unusable entry."""
    lowered = {key.lower(): value for key, value in values.items()}

    def many(name: str) -> list[str]:
        raw = lowered.get(getattr(attributes, name).lower())
        if raw is None:
            return []
        items = raw if isinstance(raw, list | tuple) else [raw]
        return [str(item) for item in items if str(item) != ""]

    def one(name: str) -> str | None:
        found = many(name)
        return found[0] if found else None

    def flag(name: str) -> bool:
        value = one(name)
        return _BOOLEAN_FIELDS[name] if value is None else value.upper() == "TRUE"

    address, kind = one("address"), one("kind")
    if not address or not kind:
        raise ValueError("entry without an address or a BAL type")
    return MailboxEntry(
        address=address.strip().lower(),
        kind=BalKind(kind.upper()),
        display_name=one("display_name") or "",
        rpps=one("rpps"),
        structure_id=one("structure_id"),
        service=one("service"),
        profession_code=one("profession_code"),
        profession_label=one("profession_label"),
        liste_rouge=flag("liste_rouge"),
        dematerialisation=flag("dematerialisation"),
        pharmacy=flag("pharmacy"),
        delegates=tuple(d.strip().lower() for d in many("delegates")),
        origin=one("origin") or ORIGIN_LOCAL,
    )


def changes(old: LdapValues, new: LdapValues) -> LdapValues:
    """The attributes whose values differ (order of multi-valued attributes ignored)."""
    return {key: value for key, value in new.items() if sorted(value) != sorted(old.get(key, []))}
