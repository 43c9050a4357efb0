"""MailboxEntry <-> LDAP attributes, and escaping of every value put in a filter or a DN."""

from __future__ import annotations

import pytest

from mssante_base.annuaire import BalKind, MailboxEntry
from mssante_base.annuaire import ldap_mapping as mapping
from mssante_base.annuaire.settings import LdapAttributes

ATTRS = LdapAttributes()
CLASSES = ("inetOrgPerson", "mssanteMailbox")


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("*", r"\2a"),
        ("(", r"\28"),
        (")", r"\29"),
        ("\\", r"\5c"),
        ("\x00", r"\00"),
        ("*)(mail=*", r"\2a\29\28mail=\2a"),
        ("élodie.durand@hôpital.mssante.fr", "élodie.durand@hôpital.mssante.fr"),
    ],
)
def test_filter_values_are_escaped(value: str, escaped: str) -> None:
    assert mapping.escape(value) == escaped
    assert mapping.equality("mail", value) == f"(mail={escaped})"


def test_dn_values_are_escaped() -> None:
    dn = mapping.entry_dn("a,b+c=d\"#<>;\\@x.fr", ATTRS, "ou=mailboxes,dc=test")
    assert dn.startswith("mssanteAddress=a\\,b\\+c\\=d\\\"#\\<\\>\\;\\\\@x.fr,")  # RFC 4514: # only leading
    assert dn.endswith(",ou=mailboxes,dc=test")


def test_an_entry_survives_the_round_trip() -> None:
    entry = MailboxEntry(
        "cardiologie@hopital.mssante.fr", BalKind.ORG, display_name="Cardiologie – Hôpital", structure_id="1750000000",
        service="Cardiologie", liste_rouge=True, dematerialisation=False, pharmacy=False,
        delegates=("dr.martin@hopital.mssante.fr", "ines@hopital.mssante.fr"), origin="local",
    )
    values = mapping.to_ldap(entry, ATTRS, CLASSES)
    assert values["mssanteListeRouge"] == ["TRUE"] and values["mssanteDematerialisation"] == ["FALSE"]
    assert values["mssantePharmacy"] == []  # the default is not written
    assert values["cn"] == ["Cardiologie – Hôpital"]
    assert values["mssanteIdNatPs"] == []  # absent: a modify removes it
    # the directory answers single values as scalars, case of attribute names may differ
    answer = {k.lower(): (v[0] if len(v) == 1 else v) for k, v in values.items() if v}
    assert mapping.from_ldap(answer, ATTRS) == entry


def test_missing_flags_take_their_defaults() -> None:
    entry = mapping.from_ldap({"mssanteaddress": ["X@Y.FR"], "mssanteBalType": ["per"]}, ATTRS)
    assert entry == MailboxEntry("x@y.fr", BalKind.PER)
    assert entry.dematerialisation and not entry.liste_rouge


def test_an_entry_without_address_or_type_is_refused() -> None:
    with pytest.raises(ValueError):
        mapping.from_ldap({"mail": ["x@y.fr"]}, ATTRS)
    with pytest.raises(ValueError):
        mapping.from_ldap({"mail": ["x@y.fr"], "mssanteBalType": ["XYZ"]}, ATTRS)


def test_changes_lists_only_what_differs() -> None:
    old = mapping.to_ldap(MailboxEntry("a@b.fr", BalKind.PER, display_name="A", delegates=("x@b.fr", "y@b.fr")),
                          ATTRS, CLASSES)
    new = mapping.to_ldap(MailboxEntry("a@b.fr", BalKind.PER, display_name="B", delegates=("y@b.fr", "x@b.fr")),
                          ATTRS, CLASSES)
    assert mapping.changes(old, new) == {"displayName": ["B"], "cn": ["B"], "sn": ["B"]}


def test_mail_mirrors_ascii_addresses_only() -> None:
    ascii_values = mapping.to_ldap(MailboxEntry("a@b.fr", BalKind.PER), ATTRS, CLASSES)
    assert ascii_values["mail"] == ["a@b.fr"] and ascii_values["mssanteAddress"] == ["a@b.fr"]
    assert mapping.to_ldap(MailboxEntry("é@b.fr", BalKind.PER), ATTRS, CLASSES)["mail"] == []


def test_another_schema_can_be_mapped() -> None:
    attrs = LdapAttributes(address="mailAddress", kind="balType")
    values = mapping.to_ldap(MailboxEntry("a@b.fr", BalKind.APP), attrs, ("device", "mssanteMailbox"))
    assert values["mailAddress"] == ["a@b.fr"] and values["balType"] == ["APP"] and "cn" not in values
