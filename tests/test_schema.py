"""The mailbox LDAP schema (schema/mssante.schema and .ldif) against a real slapd (tests/support/slapd.py)."""

from __future__ import annotations

import re
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import ldap3
import pytest
from ldap3.core.exceptions import (
    LDAPAttributeOrValueExistsResult,
    LDAPConstraintViolationResult,
    LDAPException,
    LDAPInsufficientAccessRightsResult,
    LDAPInvalidAttributeSyntaxResult,
    LDAPObjectClassViolationResult,
    LDAPSocketOpenError,
)
from support.slapd import SYSTEM_SCHEMA_DIR, Slapd, require_slapd
from support.slapd import slapd_server as slapd_server_fixture  # noqa: F401  (an alias: no ruff F811 on parameters)

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schema"
ARC = "1.3.6.1.4.1.32473.1"
ATTRIBUTES = {
    "mssanteBalType", "mssanteIdNatPs", "mssanteIdNatStruct", "mssanteService", "mssanteProfessionCode",
    "mssanteProfessionLabel", "mssanteListeRouge", "mssanteDematerialisation", "mssantePharmacy",
    "mssanteDelegate", "mssanteOrigin", "mssanteAddress",
}  # fmt: skip


def _schema_file_definitions(text: str) -> list[tuple[str, str]]:
    """(keyword, definition) pairs of a slapd.conf schema: continuation lines start with whitespace."""
    definitions: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line[0] in " \t":
            definitions[-1][1].append(line)
        else:
            keyword, rest = line.split(None, 1)
            definitions.append((keyword.lower(), [rest]))
    return [(keyword, " ".join(parts)) for keyword, parts in definitions]


def _ldif_definitions(text: str) -> list[tuple[str, str]]:
    """(keyword, definition) pairs of a cn=config schema entry, unfolded, `{N}` prefixes removed."""
    logical: list[str] = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if line.startswith(" "):
            logical[-1] += line[1:]
        else:
            logical.append(line)
    keywords = {"olcattributetypes": "attributetype", "olcobjectclasses": "objectclass"}
    definitions = []
    for line in logical:
        name, _, value = line.partition(":")
        if name.lower() in keywords:
            definitions.append((keywords[name.lower()], re.sub(r"^\s*\{\d+\}", "", value)))
    return definitions


def _normalise(definition: str) -> str:
    return " ".join(definition.replace("(", " ( ").replace(")", " ) ").split())


def test_schema_and_ldif_define_the_same_things():
    schema = _schema_file_definitions((SCHEMA_DIR / "mssante.schema").read_text())
    ldif = _ldif_definitions((SCHEMA_DIR / "mssante.ldif").read_text())
    assert [(k, _normalise(d)) for k, d in schema] == [(k, _normalise(d)) for k, d in ldif]
    names = {re.search(r"NAME '([^']+)'", d).group(1) for _, d in schema}
    assert names == ATTRIBUTES | {"mssanteMailbox"}
    oids = [d.split()[1] for _, d in schema]
    assert len(set(oids)) == len(oids)
    assert all(oid.startswith(f"{ARC}.1.") for (k, _), oid in zip(schema, oids, strict=True) if k == "attributetype")
    assert [oid for (k, _), oid in zip(schema, oids, strict=True) if k == "objectclass"] == [f"{ARC}.2.1"]
    assert "dn: cn=mssante,cn=schema,cn=config" in (SCHEMA_DIR / "mssante.ldif").read_text().splitlines()


def test_schema_file_passes_slaptest(tmp_path):
    require_slapd()
    slaptest = shutil.which("slaptest") or "/usr/sbin/slaptest"
    includes = [SYSTEM_SCHEMA_DIR / f"{name}.schema" for name in ("core", "cosine", "inetorgperson")]
    conf = tmp_path / "slapd.conf"
    conf.write_text("".join(f"include {path}\n" for path in [*includes, SCHEMA_DIR / "mssante.schema"]))
    result = subprocess.run([slaptest, "-u", "-f", str(conf)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    # The header's dependency on cosine (mail) is real: without it the object class does not load.
    conf.write_text("".join(f"include {path}\n" for path in [includes[0], SCHEMA_DIR / "mssante.schema"]))
    result = subprocess.run([slaptest, "-u", "-f", str(conf)], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0


def _mailbox(server: Slapd, address: str, **extra: object) -> tuple[str, dict[str, object]]:
    attributes: dict[str, object] = {
        "objectClass": ["inetOrgPerson", "mssanteMailbox"],
        "mssanteAddress": address,
        "cn": address,
        "sn": address.split("@")[0],
        "mssanteBalType": "PER",
    }
    if address.isascii():
        attributes["mail"] = address
    attributes.update(extra)
    return f"mssanteAddress={ldap3.utils.dn.escape_rdn(address)},{server.base_dn}", attributes


FULL = {
    "mssanteBalType": "ORG",
    "displayName": "Secrétariat de cardiologie — Hôpital Saint-Étienne",
    "mssanteIdNatPs": "810001234567",
    "mssanteIdNatStruct": "1750000123",
    "mssanteService": "Cardiologie",
    "mssanteProfessionCode": "10",
    "mssanteProfessionLabel": "Médecin",
    # ldap3 only knows to write Python booleans as TRUE/FALSE once it has read the server's schema.
    "mssanteListeRouge": "TRUE",
    "mssanteDematerialisation": "FALSE",
    "mssantePharmacy": "FALSE",
    "mssanteDelegate": ["alice.martin@hopital.mssante.fr", "Bob.Durand@hopital.mssante.fr"],
    "mssanteOrigin": "extraction",
}


def _find(conn: ldap3.Connection, server: Slapd, search_filter: str) -> list[str]:
    conn.search(server.base_dn, search_filter, attributes=[ldap3.ALL_ATTRIBUTES])
    return [entry.entry_dn for entry in conn.entries]


def test_admin_writes_a_mailbox_and_the_reader_finds_it(slapd_server):
    server = slapd_server
    dn, attributes = _mailbox(server, "cardio.secretariat@hopital.mssante.fr", **FULL)
    with server.connection(server.admin_dn) as admin:
        admin.add(dn, attributes=attributes)
    with server.connection() as reader:
        assert _find(reader, server, "(mail=CARDIO.Secretariat@HOPITAL.mssante.fr)") == [dn]
        assert _find(reader, server, "(&(objectClass=mssanteMailbox)(mssanteIdNatPs=810001234567))") == [dn]
        assert _find(reader, server, "(mssanteIdNatStruct=1750000123)") == [dn]
        assert _find(reader, server, "(mssanteDelegate=bob.durand@hopital.mssante.fr)") == [dn]
        assert _find(reader, server, "(mssanteDelegate=alice*)") == [dn]
        assert _find(reader, server, "(displayName=*saint-étienne*)") == [dn]
        assert _find(reader, server, "(displayName=*SECRÉTARIAT*)") == [dn]
        assert _find(reader, server, "(mssanteProfessionLabel=méd*)") == [dn]
        flags = "(&(mssanteListeRouge=TRUE)(mssantePharmacy=FALSE)(mssanteOrigin=EXTRACTION))"
        assert _find(reader, server, flags) == [dn]
        assert _find(reader, server, "(mssanteListeRouge=FALSE)") == []
        assert _find(reader, server, "(mssanteBalType=org)") == [dn]
        entry = reader.entries[0]
        assert entry.displayName.value == FULL["displayName"]
        assert entry.mssanteListeRouge.value == "TRUE"
        assert sorted(entry.mssanteDelegate.values) == sorted(FULL["mssanteDelegate"])
        assert entry.mssanteOrigin.value == "extraction"
        # The reader may not read passwords, even its own.
        reader.search(server.suffix, "(cn=mssante-operator)", attributes=["userPassword", "cn"])
        assert not reader.entries[0].entry_attributes_as_dict.get("userPassword")


def test_schema_aware_client_reads_booleans(slapd_server):
    """The reader may read cn=Subschema, so ldap3 (get_info=SCHEMA) learns our syntaxes."""
    server = slapd_server
    with server.connection(server.admin_dn) as admin:
        dn, attributes = _mailbox(
            server, "pharma@officine.mssante.fr", mssantePharmacy="TRUE", mssanteListeRouge="FALSE"
        )
        admin.add(dn, attributes=attributes)
    conn = ldap3.Connection(
        ldap3.Server(server.url, get_info=ldap3.SCHEMA), server.reader_dn, server.reader_password,
        auto_bind=True, raise_exceptions=True,
    )  # fmt: skip
    with conn:
        assert "mssanteMailbox" in conn.server.schema.object_classes
        assert conn.server.schema.attribute_types["mssanteDelegate"].single_value is False
        conn.search(server.base_dn, "(mssantePharmacy=TRUE)", attributes=["mssantePharmacy", "mssanteListeRouge"])
        entry = conn.entries[0]
        assert entry.mssantePharmacy.value is True
        assert entry.mssanteListeRouge.value is False


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"mssanteBalType": None}, LDAPObjectClassViolationResult),  # MUST
        ({"mssanteListeRouge": "yes"}, LDAPInvalidAttributeSyntaxResult),  # boolean syntax
        ({"mssanteIdNatPs": ["810001234567", "810007654321"]}, LDAPConstraintViolationResult),  # SINGLE-VALUE
        ({"mssanteDelegate": ["a@x.fr", "A@X.FR"]}, LDAPAttributeOrValueExistsResult),  # case-insensitive
    ],
)
def test_schema_rejects_invalid_mailboxes(slapd_server, extra, error):
    server = slapd_server
    dn, attributes = _mailbox(server, "invalid@hopital.mssante.fr", **extra)
    attributes = {name: value for name, value in attributes.items() if value is not None}
    with server.connection(server.admin_dn) as admin, pytest.raises(error):
        admin.add(dn, attributes=attributes)


def test_internationalised_addresses_live_in_mssante_address(slapd_server):
    """cosine's `mail` is an IA5String; mssanteAddress and mssanteDelegate are UTF-8 (RFC 6531 addresses)."""
    server = slapd_server
    address = "hélène.lefèvre@hôpital-nord.mssante.fr"
    dn, attributes = _mailbox(server, address, mssanteDelegate=["zoé@hôpital-nord.mssante.fr"])
    with server.connection(server.admin_dn) as admin:
        admin.add(dn, attributes=attributes)
        with pytest.raises(LDAPInvalidAttributeSyntaxResult):
            admin.modify(dn, {"mail": [(ldap3.MODIFY_REPLACE, [address])]})
    with server.connection() as reader:
        assert _find(reader, server, "(mssanteAddress=HÉLÈNE.LEFÈVRE@hôpital-nord.mssante.fr)") == [dn]
        assert _find(reader, server, "(mssanteDelegate=ZOÉ@hôpital-nord.mssante.fr)") == [dn]


def test_reader_cannot_write(slapd_server):
    server = slapd_server
    dn, attributes = _mailbox(server, "someone@hopital.mssante.fr")
    with server.connection() as reader:
        with pytest.raises(LDAPInsufficientAccessRightsResult):
            reader.add(dn, attributes=attributes)
        with pytest.raises(LDAPInsufficientAccessRightsResult):
            reader.modify(server.base_dn, {"description": [(ldap3.MODIFY_REPLACE, ["x"])]})
        with pytest.raises(LDAPInsufficientAccessRightsResult):
            reader.delete(server.base_dn)


def test_anonymous_can_do_nothing(slapd_server):
    server = slapd_server
    anonymous_bind = ldap3.Connection(ldap3.Server(server.url, get_info=ldap3.NONE))
    assert not anonymous_bind.bind()
    assert anonymous_bind.result["description"] == "inappropriateAuthentication"
    # No bind at all: searches are refused, even of the root DSE.
    unbound = ldap3.Connection(ldap3.Server(server.url, get_info=ldap3.NONE), auto_bind=ldap3.AUTO_BIND_NONE)
    unbound.open()
    for base, scope in [(server.base_dn, ldap3.SUBTREE), ("", ldap3.BASE)]:
        assert not unbound.search(base, "(objectClass=*)", search_scope=scope)
        assert unbound.result["description"] == "unwillingToPerform"  # slapd: "authentication required"
    unbound.unbind()
    # A wrong password is refused too.
    wrong = ldap3.Connection(ldap3.Server(server.url, get_info=ldap3.NONE), server.reader_dn, "wrong")
    assert not wrong.bind()
    assert wrong.result["description"] == "invalidCredentials"


def _tls(ca_file: Path) -> ldap3.Tls:
    # From Python 3.12 ldap3 falls back to its own match_hostname, which ignores IP subjectAltNames:
    # valid_names lets it accept the certificate's DNS name when the URL says 127.0.0.1.
    return ldap3.Tls(
        validate=ssl.CERT_REQUIRED, ca_certs_file=str(ca_file), version=ssl.PROTOCOL_TLS_CLIENT,
        valid_names=["localhost"],
    )  # fmt: skip


def test_starttls_with_the_ca(slapd_server):
    server = slapd_server
    conn = ldap3.Connection(
        ldap3.Server(server.url, tls=_tls(server.ca_file), get_info=ldap3.NONE),
        server.reader_dn, server.reader_password, raise_exceptions=True,
    )  # fmt: skip
    conn.open()
    assert conn.start_tls()
    assert conn.bind()
    assert conn.socket.version() in {"TLSv1.2", "TLSv1.3"}
    assert conn.search(server.base_dn, "(objectClass=*)", search_scope=ldap3.BASE)
    conn.unbind()


def test_ldaps_validates_the_certificate(slapd_server):
    server = slapd_server
    for host in ("127.0.0.1", "localhost"):  # both are in the certificate's subjectAltName
        url = server.ldaps_url.replace("127.0.0.1", host)
        conn = ldap3.Connection(
            ldap3.Server(url, use_ssl=True, tls=_tls(server.ca_file), get_info=ldap3.NONE),
            server.reader_dn, server.reader_password, auto_bind=True, raise_exceptions=True,
        )  # fmt: skip
        assert conn.search(server.base_dn, "(objectClass=*)", search_scope=ldap3.BASE)
        conn.unbind()
    # Another CA (here: the system's, which never signed this certificate) is refused.
    system = ldap3.Tls(validate=ssl.CERT_REQUIRED, version=ssl.PROTOCOL_TLS_CLIENT)
    with pytest.raises(LDAPSocketOpenError):
        ldap3.Connection(
            ldap3.Server(server.ldaps_url, use_ssl=True, tls=system, get_info=ldap3.NONE, connect_timeout=5),
            server.reader_dn, server.reader_password, auto_bind=True,
        )  # fmt: skip


def _handshake(server: Slapd, context: ssl.SSLContext, host: str = "127.0.0.1") -> str:
    with (
        socket.create_connection(("127.0.0.1", server.ldaps_port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        return tls.version()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_certificate_names_and_versions(slapd_server):
    server = slapd_server
    context = ssl.create_default_context(cafile=str(server.ca_file))
    # The certificate is valid for the IP address (stdlib check_hostname, unlike ldap3's) and localhost.
    assert _handshake(server, context) in {"TLSv1.2", "TLSv1.3"}
    assert _handshake(server, context, "localhost") in {"TLSv1.2", "TLSv1.3"}
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server, context, "127.0.0.2")
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    assert _handshake(server, context) == "TLSv1.2"
    # TLS 1.1 and older are refused by the server (the client allows them at security level 0).
    legacy = ssl.create_default_context(cafile=str(server.ca_file))
    legacy.set_ciphers("DEFAULT:@SECLEVEL=0")
    legacy.minimum_version = ssl.TLSVersion.TLSv1
    legacy.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError):
        _handshake(server, legacy)


def test_stop_then_start_keeps_data_and_ports(slapd_server):
    server = slapd_server
    dn, attributes = _mailbox(server, "persistent@hopital.mssante.fr")
    with server.connection(server.admin_dn) as admin:
        admin.add(dn, attributes=attributes)
    url = server.url
    server.stop()
    server.stop()  # idempotent
    assert not server.running
    with pytest.raises(LDAPException):
        server.connection()
    server.start()
    assert server.url == url
    with server.connection() as reader:
        assert _find(reader, server, "(mail=persistent@hopital.mssante.fr)") == [dn]


def test_paused_directory_times_out(slapd_server):
    server = slapd_server
    with server.connection(receive_timeout=1) as reader:
        server.pause()
        try:
            with pytest.raises(LDAPException):
                reader.search(server.base_dn, "(objectClass=*)")
            # New connections are accepted by the kernel, but the bind never gets an answer.
            with pytest.raises(LDAPException):
                server.connection(receive_timeout=1)
        finally:
            server.resume()
    with server.connection() as reader:
        assert reader.search(server.base_dn, "(objectClass=*)", search_scope=ldap3.BASE)
