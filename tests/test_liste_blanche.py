"""The ANS liste blanche: parsing the XML as ANS publishes it, and reloading it without losing it."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mssante_base.trust.dn import parse_dn
from mssante_operator.trust_space.liste_blanche import (
    ListeBlancheError,
    ListeBlancheHolder,
    ListedDomain,
    parse_liste_blanche,
    render_liste_blanche,
)

# Shaped like ansforge/MSS-liste-blanche's listeblanchemssante.xml: one <Domaine> per (domain, server DN),
# a domain served by two servers, an upper-case name, a contact with a trailing newline.
ENOVACOM = "CN=mss.enovacom.fr,OU=344368557300034,O=ENOVACOM,ST=Bouches-du-Rhône (13),C=FR"
SESAN = "CN=smtp-1.sesan.santnet.com,OU=1750048886,O=GIP SESAN,ST=Paris (75),C=FR"
MIPIH = "CN=medimail-asip.mipih.fr,OU=318310021300028,O=GIP MIPIH,ST=Haute-Garonne (31),C=FR"

ANS_SAMPLE = f"""<?xml version="1.0" encoding="UTF-8"?><ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema">
    <DateDeGeneration>2025-03-13T14:54:10Z</DateDeGeneration>
    <ListeDomaines>
        <Domaine>
            <Nom>15-20.mssante.fr</Nom>
            <Description>Domaine de messagerie MSSanté du 15-20</Description>
            <DNCertificatOperateur>{ENOVACOM}</DNCertificatOperateur>
            <ResponsableContact>04 86 87 00 00, managedservices.team@enovacom.com</ResponsableContact>
            <SupportContact>04 86 87 00 00, managedservices.team@enovacom.com
</SupportContact>
            <DateMAJ>2025-01-22T11:32:50Z</DateMAJ>
        </Domaine>
        <Domaine>
            <Nom>15-20.mssante.fr</Nom>
            <Description>Domaine de messagerie MSSanté géré par le GRADeS SESAN pour le 15-20</Description>
            <DNCertificatOperateur>{SESAN}</DNCertificatOperateur>
            <ResponsableContact>0659754478, mssante-socle@sesan.fr</ResponsableContact>
            <SupportContact>01 84 79 08 29, mssante-socle@sesan.fr</SupportContact>
            <DateMAJ>2025-01-27T15:49:34Z</DateMAJ>
        </Domaine>
        <Domaine>
            <Nom>UC-CMP.mssante.fr</Nom>
            <Description>UC-CMP</Description>
            <DNCertificatOperateur>{MIPIH}</DNCertificatOperateur>
            <ResponsableContact>08 10  61 50 50, medimail.diffusion@mipih.fr</ResponsableContact>
            <SupportContact>08 10  61 50 50, medimail.technique@mipih.fr</SupportContact>
            <DateMAJ>2025-03-13T14:54:10Z</DateMAJ>
        </Domaine>
    </ListeDomaines>
</ListeBlancheMSSante>
""".encode()


def _document(*domaines: str, namespace: bool = True) -> bytes:
    xmlns = ' xmlns="https://listeblanche.mssante.fr/schema"' if namespace else ""
    body = "".join(f"<Domaine>{d}</Domaine>" for d in domaines)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><ListeBlancheMSSante{xmlns}>'
        f"<DateDeGeneration>2025-03-13T14:54:10Z</DateDeGeneration><ListeDomaines>{body}</ListeDomaines>"
        "</ListeBlancheMSSante>"
    ).encode()


def _domaine(name: str, dn: str, description: str = "") -> str:
    return (
        f"<Nom>{name}</Nom><Description>{description}</Description>"
        f"<DNCertificatOperateur>{dn}</DNCertificatOperateur>"
    )


# --- parsing -------------------------------------------------------------------------------------


def test_ans_document_is_parsed_with_its_namespace():
    liste = parse_liste_blanche(ANS_SAMPLE)
    assert len(liste) == 3
    assert liste.generated == datetime(2025, 3, 13, 14, 54, 10, tzinfo=UTC)
    assert liste.is_listed("15-20.mssante.fr")
    assert liste.dn_allowed("uc-cmp.mssante.fr", parse_dn(MIPIH))
    first = liste.entries[0]
    assert first.support_contact == "04 86 87 00 00, managedservices.team@enovacom.com"
    assert first.updated == "2025-01-22T11:32:50Z"


def test_document_without_namespace_is_parsed_the_same():
    namespaced = parse_liste_blanche(_document(_domaine("a.mssante.fr", MIPIH)))
    bare = parse_liste_blanche(_document(_domaine("a.mssante.fr", MIPIH), namespace=False))
    assert namespaced.domains == bare.domains


def test_document_with_another_namespace_prefix_is_parsed():
    data = (
        '<lb:ListeBlancheMSSante xmlns:lb="https://listeblanche.mssante.fr/schema"><lb:ListeDomaines>'
        f"<lb:Domaine><lb:Nom>a.mssante.fr</lb:Nom><lb:DNCertificatOperateur>{MIPIH}</lb:DNCertificatOperateur>"
        "</lb:Domaine></lb:ListeDomaines></lb:ListeBlancheMSSante>"
    ).encode()
    assert parse_liste_blanche(data).is_listed("a.mssante.fr")


def test_domain_listed_twice_accepts_both_certificate_dns():
    liste = parse_liste_blanche(ANS_SAMPLE)
    assert liste.domains["15-20.mssante.fr"] == frozenset({parse_dn(ENOVACOM), parse_dn(SESAN)})
    assert liste.dn_allowed("15-20.mssante.fr", parse_dn(ENOVACOM))
    assert liste.dn_allowed("15-20.mssante.fr", parse_dn(SESAN))
    assert not liste.dn_allowed("15-20.mssante.fr", parse_dn(MIPIH))


def test_dn_listed_for_one_domain_is_not_allowed_for_another():
    liste = parse_liste_blanche(ANS_SAMPLE)
    assert not liste.dn_allowed("uc-cmp.mssante.fr", parse_dn(SESAN))
    assert not liste.dn_allowed("unlisted.mssante.fr", parse_dn(MIPIH))


def test_domain_names_compare_without_case_or_trailing_dot():
    liste = parse_liste_blanche(ANS_SAMPLE)
    assert liste.is_listed("uc-cmp.mssante.fr")
    assert liste.is_listed("UC-CMP.MSSANTE.FR.")
    assert not liste.is_listed("cmp.mssante.fr")


def test_non_ascii_domain_names_and_descriptions_are_kept():
    data = _document(
        _domaine("hôpital-été.mssante.fr", "CN=smtp.hôpital.fr,O=Hôpital d'Été,ST=Rhône (69),C=FR",
                 "Centre hospitalier « Été » — Lyon"),
    )
    liste = parse_liste_blanche(data)
    assert liste.is_listed("HÔPITAL-ÉTÉ.mssante.fr")
    assert liste.entries[0].description == "Centre hospitalier « Été » — Lyon"
    assert liste.dn_allowed("hôpital-été.mssante.fr", parse_dn("C=FR,ST=Rhône (69),O=HÔPITAL D'ÉTÉ,CN=smtp.hôpital.fr"))


def test_latin1_encoded_document_is_decoded_from_its_declaration():
    text = _document(_domaine("a.mssante.fr", "CN=a,ST=Rhône (69),C=FR", "Clinique Sainte-Hélène")).decode()
    data = text.replace('encoding="UTF-8"', 'encoding="ISO-8859-1"').encode("latin-1")
    liste = parse_liste_blanche(data)
    assert liste.entries[0].description == "Clinique Sainte-Hélène"
    assert liste.dn_allowed("a.mssante.fr", parse_dn("CN=a,ST=Rhône (69),C=FR"))


def test_entries_without_dn_or_name_are_skipped(caplog):
    data = _document(
        _domaine("ok.mssante.fr", MIPIH),
        "<Nom>sans-dn.mssante.fr</Nom><Description>pas de DN</Description>",
        f"<Description>sans nom</Description><DNCertificatOperateur>{SESAN}</DNCertificatOperateur>",
        _domaine("vide.mssante.fr", "   "),
    )
    with caplog.at_level(logging.WARNING):
        liste = parse_liste_blanche(data)
    assert [entry.name for entry in liste.entries] == ["ok.mssante.fr"]
    assert not liste.is_listed("sans-dn.mssante.fr")
    assert not liste.is_listed("vide.mssante.fr")
    assert "skipped" in caplog.text


def test_entry_with_unreadable_dn_is_skipped_not_fatal():
    liste = parse_liste_blanche(_document(_domaine("ok.mssante.fr", MIPIH), _domaine("bad.mssante.fr", "garbage")))
    assert liste.is_listed("ok.mssante.fr")
    assert not liste.is_listed("bad.mssante.fr")


def test_document_without_any_usable_entry_is_refused():
    with pytest.raises(ListeBlancheError, match="no usable Domaine"):
        parse_liste_blanche(_document("<Nom>sans-dn.mssante.fr</Nom>"))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"<ListeBlancheMSSante><ListeDomaines><Domaine>",
        b"not xml at all",
        ANS_SAMPLE[: len(ANS_SAMPLE) // 2],
        ANS_SAMPLE.replace(b"</Nom>", b"</Name>", 1),
    ],
    ids=["empty", "unclosed", "text", "truncated", "mismatched-tag"],
)
def test_malformed_xml_raises(data):
    with pytest.raises(ListeBlancheError, match="malformed XML"):
        parse_liste_blanche(data)


def test_wrong_root_element_raises():
    with pytest.raises(ListeBlancheError, match="root element"):
        parse_liste_blanche(b"<html><body>502 Bad Gateway</body></html>")


def test_unreadable_generation_date_raises():
    data = ANS_SAMPLE.replace(b"2025-03-13T14:54:10Z</DateDeGeneration>", b"hier</DateDeGeneration>")
    with pytest.raises(ListeBlancheError, match="DateDeGeneration"):
        parse_liste_blanche(data)


def test_doctype_is_refused():
    data = b'<?xml version="1.0"?><!DOCTYPE ListeBlancheMSSante SYSTEM "http://evil.example/x.dtd">' + ANS_SAMPLE[38:]
    with pytest.raises(ListeBlancheError, match="DTD"):
        parse_liste_blanche(data)


def test_entity_declarations_are_refused():
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "ha"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b"<ListeBlancheMSSante><ListeDomaines><Domaine><Nom>&b;.mssante.fr</Nom>"
        b"<DNCertificatOperateur>CN=a,C=FR</DNCertificatOperateur></Domaine></ListeDomaines></ListeBlancheMSSante>"
    )
    with pytest.raises(ListeBlancheError, match="DTD"):
        parse_liste_blanche(laughs)


def test_dtd_hidden_in_utf16_is_refused():
    document = (
        '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE l [<!ENTITY a "x">]>'
        "<ListeBlancheMSSante><ListeDomaines><Domaine><Nom>&a;.mssante.fr</Nom>"
        "<DNCertificatOperateur>CN=a,C=FR</DNCertificatOperateur></Domaine></ListeDomaines></ListeBlancheMSSante>"
    )
    with pytest.raises(ListeBlancheError, match="DTD"):
        parse_liste_blanche(document.encode("utf-16"))


def test_rendered_document_parses_back_to_the_same_entries():
    entries = [
        ListedDomain(name="a.mssante.fr", dn_text=MIPIH, description="Établissement « A »",
                     responsable_contact="dpo@a.fr", support_contact="support@a.fr", updated="2025-01-01"),
        ListedDomain(name="a.mssante.fr", dn_text=SESAN, description="second serveur"),
    ]
    liste = parse_liste_blanche(render_liste_blanche(entries, datetime(2025, 3, 13, 14, 54, 10, tzinfo=UTC)))
    assert list(liste.entries) == entries
    assert liste.generated == datetime(2025, 3, 13, 14, 54, 10, tzinfo=UTC)


# --- the holder: reload keeps the last good list ----------------------------------------------------


def test_holder_refuses_to_start_on_a_malformed_file(tmp_path: Path):
    path = tmp_path / "listeblanche.xml"
    path.write_bytes(b"<ListeBlancheMSSante>")
    with pytest.raises(ListeBlancheError, match=re.escape(str(path))):
        ListeBlancheHolder(path).reload()


def test_holder_refuses_to_start_without_a_file(tmp_path: Path):
    with pytest.raises(ListeBlancheError, match=r"missing\.xml"):
        ListeBlancheHolder(tmp_path / "missing.xml").reload()


def test_holder_has_no_list_before_the_first_load(tmp_path: Path):
    with pytest.raises(ListeBlancheError, match="no liste blanche loaded"):
        _ = ListeBlancheHolder(tmp_path / "listeblanche.xml").current


def test_holder_keeps_the_last_good_list_when_the_file_becomes_malformed(tmp_path: Path, caplog):
    path = tmp_path / "listeblanche.xml"
    path.write_bytes(ANS_SAMPLE)
    holder = ListeBlancheHolder(path)
    assert holder.reload() is True
    good = holder.current
    path.write_bytes(ANS_SAMPLE[:200])
    with caplog.at_level(logging.ERROR):
        assert holder.reload() is False
    assert holder.current is good
    assert holder.current.is_listed("15-20.mssante.fr")
    assert "keeping the last good list" in caplog.text
    assert "malformed XML" in caplog.text


def test_holder_keeps_the_last_good_list_when_the_file_disappears(tmp_path: Path):
    path = tmp_path / "listeblanche.xml"
    path.write_bytes(ANS_SAMPLE)
    holder = ListeBlancheHolder(path)
    holder.reload()
    path.unlink()
    assert holder.reload() is False
    assert holder.current.is_listed("uc-cmp.mssante.fr")


def test_holder_picks_up_a_good_new_list_after_a_bad_one(tmp_path: Path):
    path = tmp_path / "listeblanche.xml"
    path.write_bytes(ANS_SAMPLE)
    holder = ListeBlancheHolder(path)
    holder.reload()
    path.write_bytes(b"garbage")
    holder.reload()
    path.write_bytes(_document(_domaine("nouveau.mssante.fr", MIPIH)))
    assert holder.reload() is True
    assert holder.current.is_listed("nouveau.mssante.fr")
    assert not holder.current.is_listed("15-20.mssante.fr")
