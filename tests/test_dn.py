"""Distinguished names compare by meaning: the liste blanche's text against a certificate's subject."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from mssante_base.trust.dn import name_to_dn, name_to_text, parse_dn

LISTED = "CN=smtp.labo-biolab.mssante.fr,OU=38012345600017,O=LABORATOIRE BIOLAB,ST=Rhône (69),C=FR"


def _name(*rdns: list[tuple[x509.ObjectIdentifier, str]]) -> x509.Name:
    """An x509.Name from RDNs given most significant first (C ... CN), as certificates store them."""
    return x509.Name([x509.RelativeDistinguishedName([x509.NameAttribute(o, v) for o, v in rdn]) for rdn in rdns])


IGC_SUBJECT = _name(
    [(NameOID.COUNTRY_NAME, "FR")],
    [(NameOID.STATE_OR_PROVINCE_NAME, "Rhône (69)")],
    [(NameOID.ORGANIZATION_NAME, "LABORATOIRE BIOLAB")],
    [(NameOID.ORGANIZATIONAL_UNIT_NAME, "38012345600017")],
    [(NameOID.COMMON_NAME, "smtp.labo-biolab.mssante.fr")],
)


def test_same_text_gives_same_dn():
    assert parse_dn(LISTED) == parse_dn(LISTED)


def test_attribute_order_does_not_matter():
    reversed_text = "C=FR,ST=Rhône (69),O=LABORATOIRE BIOLAB,OU=38012345600017,CN=smtp.labo-biolab.mssante.fr"
    assert parse_dn(reversed_text) == parse_dn(LISTED)


def test_spacing_around_separators_does_not_matter():
    spaced = "CN = smtp.labo-biolab.mssante.fr , OU=38012345600017,  O=LABORATOIRE  BIOLAB ,ST=Rhône (69), C=FR"
    assert parse_dn(spaced) == parse_dn(LISTED)


def test_semicolon_separators_are_accepted():
    assert parse_dn(LISTED.replace(",", ";")) == parse_dn(LISTED)


def test_case_of_types_and_values_does_not_matter():
    assert parse_dn(LISTED.lower()) == parse_dn(LISTED)
    assert parse_dn("cn=SMTP.LABO-BIOLAB.MSSANTE.FR,ou=38012345600017,o=Laboratoire Biolab,st=RHÔNE (69),c=fr") \
        == parse_dn(LISTED)


def test_attribute_type_aliases_and_oids_are_the_same_type():
    assert parse_dn("2.5.4.3=a,OID.2.5.4.10=b,S=Rhône (69),C=FR") == parse_dn("CN=a,O=b,ST=Rhône (69),C=FR")


def test_a_different_value_is_a_different_dn():
    assert parse_dn(LISTED.replace("smtp.", "smtp2.")) != parse_dn(LISTED)
    assert parse_dn(LISTED.replace("(69)", "(42)")) != parse_dn(LISTED)


def test_a_missing_or_extra_attribute_is_a_different_dn():
    assert parse_dn(LISTED.removesuffix(",C=FR")) != parse_dn(LISTED)
    assert parse_dn(LISTED + ",L=Lyon") != parse_dn(LISTED)


def test_escaped_comma_stays_inside_the_value():
    dn = parse_dn(r"CN=smtp.op.fr,O=Dupont\, Durand et Fils,C=FR")
    assert ("O", "dupont, durand et fils") in dn
    assert len(dn) == 3


def test_quoted_value_may_hold_a_comma():
    assert parse_dn('CN=smtp.op.fr,O="Dupont, Durand et Fils",C=FR') == parse_dn(
        r"CN=smtp.op.fr,O=Dupont\, Durand et Fils,C=FR"
    )


def test_hex_escaped_utf8_equals_the_plain_character():
    assert parse_dn(r"CN=a,ST=Rh\C3\B4ne (69),C=FR") == parse_dn("CN=a,ST=Rhône (69),C=FR")


def test_escaped_plus_is_not_a_multi_valued_rdn():
    dn = parse_dn(r"CN=a,O=A\+B,C=FR")
    assert ("O", "a+b") in dn
    assert len(dn) == 3


def test_multi_valued_rdn_equals_the_same_attributes_written_apart():
    assert parse_dn("CN=smtp.op.fr+OU=1234,O=OP,C=FR") == parse_dn("CN=smtp.op.fr,OU=1234,O=OP,C=FR")


def test_non_ascii_department_is_compared_after_unicode_normalisation():
    composed = "CN=a,ST=Rhône (69),C=FR"
    decomposed = "CN=a,ST=Rho\u0302ne (69),C=FR"
    assert composed != decomposed
    assert parse_dn(composed) == parse_dn(decomposed)
    assert parse_dn(composed) != parse_dn("CN=a,ST=Rhone (69),C=FR")


def test_certificate_subject_equals_the_listed_text():
    assert name_to_dn(IGC_SUBJECT) == parse_dn(LISTED)


def test_certificate_subject_written_as_text_reads_back_the_same():
    assert name_to_text(IGC_SUBJECT) == LISTED
    assert parse_dn(name_to_text(IGC_SUBJECT)) == name_to_dn(IGC_SUBJECT)


def test_certificate_subject_with_multi_valued_rdn_and_comma_equals_its_text():
    name = _name(
        [(NameOID.COUNTRY_NAME, "FR")],
        [(NameOID.ORGANIZATION_NAME, "Dupont, Durand"), (NameOID.ORGANIZATIONAL_UNIT_NAME, "1234")],
        [(NameOID.COMMON_NAME, "smtp.op.fr")],
    )
    assert name_to_dn(name) == parse_dn(r"CN=smtp.op.fr,OU=1234,O=Dupont\, Durand,C=FR")
    assert parse_dn(name_to_text(name)) == name_to_dn(name)


def test_certificate_subject_with_another_department_differs():
    other = _name(
        [(NameOID.COUNTRY_NAME, "FR")],
        [(NameOID.STATE_OR_PROVINCE_NAME, "Loire (42)")],
        [(NameOID.ORGANIZATION_NAME, "LABORATOIRE BIOLAB")],
        [(NameOID.ORGANIZATIONAL_UNIT_NAME, "38012345600017")],
        [(NameOID.COMMON_NAME, "smtp.labo-biolab.mssante.fr")],
    )
    assert name_to_dn(other) != parse_dn(LISTED)


@pytest.mark.parametrize("text", ["", " , ", "garbage", "=value", "CN=a,\\", 'CN="unterminated,C=FR'])
def test_text_that_is_not_a_dn_raises_value_error(text):
    with pytest.raises(ValueError):
        parse_dn(text)
