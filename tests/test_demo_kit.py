"""The demo kit: every file present and consistent, demo.json per the contract, TLS material usable."""

from __future__ import annotations

import base64
import json
import ssl
import stat
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mssante_base.annuaire import BalKind, MailboxEntry
from mssante_base.trust.dn import name_to_dn
from mssante_operator.config import load_settings
from mssante_operator.demo_kit import KitExistsError, create_kit, read_manifest
from mssante_operator.trust_space.liste_blanche import parse_liste_blanche


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("kit")
    create_kit(home)
    return home


@pytest.fixture(scope="module")
def manifest(home) -> dict:
    return read_manifest(home)


def _certs(home: Path, rel: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates((home / rel).read_bytes())


def _leaf(home: Path, rel: str) -> x509.Certificate:
    return _certs(home, rel)[0]


def _verifier(home: Path, ca_rel: str) -> verification.ClientVerifier:
    store = verification.Store(_certs(home, ca_rel))
    return verification.PolicyBuilder().store(store).build_client_verifier()


def _kit_cert_paths(manifest: dict) -> list[tuple[str, str]]:
    """(cert, key) of every certificate the kit issues under the trust CA."""
    pairs = [(manifest["operator_cert"], manifest["operator_key"])]
    pairs += [(peer["cert"], peer["key"]) for peer in manifest["peers"]]
    pairs += [(box["cert"], box["key"]) for box in manifest["mailboxes"]]
    pairs.append((manifest["bridge_cert"], manifest["bridge_key"]))
    return pairs


def test_config_validates(home, manifest):
    settings = load_settings(home)
    assert settings.operator.domain == manifest["operator"]["domain"] == "hopital-demo.mssante.fr"
    assert settings.operator.hostname == "mx.hopital-demo.mssante.fr"
    for path in (settings.tls.cert, settings.tls.key, settings.trust_space.ca_bundle,
                 settings.trust_space.liste_blanche, settings.dkim.private_key, settings.annuaire.file,
                 *settings.trust_space.crl_files):
        assert settings.path(path).is_file(), path
    assert settings.trust_space.refresh_interval == 3600
    assert settings.listeners.mta.tls == "starttls" and settings.listeners.mtas.tls == "implicit"
    assert settings.database_url == f"sqlite:///{home.resolve() / 'store.db'}"
    assert "[limits]" in (home / "config.toml").read_text(encoding="utf-8")


def test_manifest_follows_the_contract(home, manifest):
    assert set(manifest) == {"operator", "listeners", "trust_ca", "operator_cert", "operator_key",
                             "peers", "rogue", "mailboxes", "patients", "bridge_cert", "bridge_key"}
    assert set(manifest["operator"]) == {"domain", "dkim_selector", "dkim_public_txt"}
    assert manifest["operator"]["dkim_public_txt"].startswith("v=DKIM1; k=rsa; p=")
    assert set(manifest["rogue"]) == {"domain", "sender", "cert", "key"}
    peer_keys = {"name", "domain", "sender", "cert", "key", "dn", "dkim_selector", "dkim_key", "revoked"}
    for peer in manifest["peers"]:
        assert set(peer) == peer_keys
        assert isinstance(peer["revoked"], bool)
        assert peer["sender"].endswith("@" + peer["domain"])
    assert sorted(p["revoked"] for p in manifest["peers"]) == [False, True]
    box_keys = {"address", "kind", "password", "rpps", "delegates", "pharmacy", "cert", "key"}
    for box in manifest["mailboxes"]:
        assert set(box) == box_keys
        assert box["kind"] in {"PER", "ORG", "APP"}
        assert isinstance(box["password"], str) and len(box["password"]) >= 12
        assert isinstance(box["delegates"], list) and isinstance(box["pharmacy"], bool)
        assert box["rpps"] is None or (isinstance(box["rpps"], str) and len(box["rpps"]) == 11)
    for rel in [manifest["trust_ca"], manifest["rogue"]["cert"], manifest["rogue"]["key"],
                *(p["dkim_key"] for p in manifest["peers"]), *(p for pair in _kit_cert_paths(manifest)
                                                              for p in pair)]:
        assert not Path(rel).is_absolute()
        assert (home / rel).is_file(), rel


def test_kit_files_exist_and_keys_are_private(home, manifest):
    for rel in ("certs/trust-ca.pem", "certs/trust-ca.crl.pem", "certs/rogue-ca.pem", "listeblanche.xml",
                "annuaire.json", "credentials.json", "config.toml", "demo.json",
                "dkim/hopital-demo.mssante.fr.key"):
        assert (home / rel).is_file(), rel
    secrets = [key for _, key in _kit_cert_paths(manifest)] + [manifest["rogue"]["key"], "credentials.json"]
    secrets += [p["dkim_key"] for p in manifest["peers"]] + ["dkim/hopital-demo.mssante.fr.key", "demo.json"]
    for rel in secrets:
        assert stat.S_IMODE((home / rel).stat().st_mode) == 0o600, rel


def test_listeners_have_distinct_ports(home, manifest):
    listeners = manifest["listeners"]
    assert set(listeners) == {"mta", "mtas", "submission", "submissions", "imap", "imaps", "autoconfig",
                              "bridge_lmtp", "bridge_registry", "web", "metrics"}
    ports = [listener["port"] for listener in listeners.values()]
    assert all(isinstance(port, int) and 0 < port < 65536 for port in ports)
    assert len(set(ports)) == len(ports)
    settings = load_settings(home)
    assert (settings.listeners.mta.host, settings.listeners.mta.port) == (
        listeners["mta"]["host"], listeners["mta"]["port"])
    for name, listener in listeners.items():  # config.toml and demo.json agree, TLS style by contract name
        if name.startswith("bridge_") or name == "web":
            continue  # mes_bridge's, in [bridge] (test_patients_and_bridge_are_configured)
        if name == "metrics":  # plain HTTP, in [metrics]
            assert settings.metrics is not None
            assert (settings.metrics.host, settings.metrics.port) == (listener["host"], listener["port"])
            continue
        configured = getattr(settings.listeners, name)
        assert (configured.host, configured.port) == (listener["host"], listener["port"])
        assert configured.tls == ("implicit" if name.endswith("s") or name == "autoconfig" else "starttls")


def test_every_kit_certificate_chains_to_trust_ca(home, manifest):
    verifier = _verifier(home, manifest["trust_ca"])
    for cert_rel, key_rel in _kit_cert_paths(manifest):
        chain = _certs(home, cert_rel)
        assert len(chain) == 2 and chain[1] == _certs(home, manifest["trust_ca"])[0], cert_rel
        verifier.verify(chain[0], chain[1:])
        key = serialization.load_pem_private_key((home / key_rel).read_bytes(), None)
        assert key.public_key().public_numbers() == chain[0].public_key().public_numbers()
        assert chain[0].subject.rfc4514_string().endswith(",C=FR")
        assert chain[0].subject.rfc4514_string().startswith("CN=")


def test_operator_certificate_serves_its_hostname_and_localhost(home, manifest):
    store = verification.Store(_certs(home, manifest["trust_ca"]))
    leaf = _leaf(home, manifest["operator_cert"])
    for name in (x509.DNSName("mx.hopital-demo.mssante.fr"), x509.DNSName("localhost")):
        verification.PolicyBuilder().store(store).build_server_verifier(name).verify(leaf, [])
    eku = set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert eku == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}


def test_rogue_chains_only_to_its_own_ca(home, manifest):
    rogue = _certs(home, manifest["rogue"]["cert"])
    with pytest.raises(verification.VerificationError):
        _verifier(home, manifest["trust_ca"]).verify(rogue[0], rogue[1:])
    _verifier(home, "certs/rogue-ca.pem").verify(rogue[0], rogue[1:])
    assert rogue[0].subject.rfc4514_string().startswith("CN=smtp.operateur-pirate.fr,OU=")


def test_crl_revokes_exactly_the_revoked_peer(home, manifest):
    crl = x509.load_pem_x509_crl((home / "certs/trust-ca.crl.pem").read_bytes())
    assert crl.is_signature_valid(_certs(home, manifest["trust_ca"])[0].public_key())
    for peer in manifest["peers"]:
        serial = _leaf(home, peer["cert"]).serial_number
        assert (crl.get_revoked_certificate_by_serial_number(serial) is not None) is peer["revoked"]
    operator_serial = _leaf(home, manifest["operator_cert"]).serial_number
    assert crl.get_revoked_certificate_by_serial_number(operator_serial) is None


def test_liste_blanche_lists_peers_by_dn(home, manifest):
    liste = parse_liste_blanche((home / "listeblanche.xml").read_bytes())
    for peer in manifest["peers"]:  # the revoked peer stays listed: only the CRL marks it
        subject = _leaf(home, peer["cert"]).subject
        assert peer["dn"] == subject.rfc4514_string()
        assert liste.dn_allowed(peer["domain"], name_to_dn(subject))
    operator = _leaf(home, manifest["operator_cert"]).subject
    assert liste.dn_allowed(manifest["operator"]["domain"], name_to_dn(operator))
    assert not liste.is_listed(manifest["rogue"]["domain"])
    assert len(liste.domains["labo-biolab.mssante.fr"]) == 2
    assert any(not entry.description.isascii() for entry in liste.entries)


def test_annuaire_holds_the_required_mailboxes(home, manifest):
    data = json.loads((home / "annuaire.json").read_text(encoding="utf-8"))
    entries = {e.address: e for e in map(MailboxEntry.from_json, data["entries"])}
    remote = {address for address in entries if not address.endswith("@hopital-demo.mssante.fr")}
    assert remote == {"resultats@labo-biolab.mssante.fr"}  # a peer's professional, as the extraction lists them
    assert {box["address"] for box in manifest["mailboxes"]} == set(entries) - remote
    pers = [e for e in entries.values() if e.kind is BalKind.PER]
    assert len(pers) >= 2 and all(e.rpps and len(e.rpps) == 11 for e in pers)
    org = entries["cardiologie@hopital-demo.mssante.fr"]
    assert org.kind is BalKind.ORG and org.delegates and set(org.delegates) <= set(entries)
    assert entries["labo-auto@hopital-demo.mssante.fr"].kind is BalKind.APP
    pharmacy = entries["pharmacie.centrale@hopital-demo.mssante.fr"]
    assert pharmacy.kind is BalKind.ORG and pharmacy.pharmacy and pharmacy.profession_code == "21"
    assert entries["dr.martin@hopital-demo.mssante.fr"].profession_code == "10"
    for box in manifest["mailboxes"]:
        entry = entries[box["address"]]
        assert (box["kind"], box["rpps"], box["delegates"], box["pharmacy"]) == (
            entry.kind.value, entry.rpps, list(entry.delegates), entry.pharmacy)


def test_mailbox_certificates_name_the_mailbox(home, manifest):
    for box in manifest["mailboxes"]:
        leaf = _leaf(home, box["cert"])
        assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == box["address"]
        ou = leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value
        assert ou == (box["rpps"] or ou) and ou.isdigit()
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.RFC822Name) == [box["address"]]
        eku = set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        assert eku == {ExtendedKeyUsageOID.CLIENT_AUTH}


def test_credentials_verify_against_demo_passwords(home, manifest):
    credentials = json.loads((home / "credentials.json").read_text(encoding="utf-8"))
    assert set(credentials) == {box["address"] for box in manifest["mailboxes"]}
    hasher = PasswordHasher()
    for box in manifest["mailboxes"]:
        assert box["password"] not in credentials[box["address"]]
        assert hasher.verify(credentials[box["address"]], box["password"])


def test_dkim_static_keys_match_private_keys(home, manifest):
    settings = load_settings(home)
    selector = manifest["operator"]["dkim_selector"]
    pairs = [(manifest["operator"]["domain"], str(settings.dkim.private_key))]
    pairs += [(peer["domain"], peer["dkim_key"]) for peer in manifest["peers"]]
    assert settings.dkim.key_source == "static"
    assert settings.dkim.static_keys[f"{selector}._domainkey.hopital-demo.mssante.fr"] == (
        manifest["operator"]["dkim_public_txt"])
    for domain, key_rel in pairs:
        txt = settings.dkim.static_keys[f"{selector}._domainkey.{domain}"]
        public = serialization.load_der_public_key(base64.b64decode(txt.split("p=", 1)[1]))
        private = serialization.load_pem_private_key((home / key_rel).read_bytes(), None)
        assert public.public_numbers() == private.public_key().public_numbers()


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    """A TLS handshake over memory BIOs; raises ssl.SSLError when either side refuses."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="mx.hopital-demo.mssante.fr")
    done = {"server": False, "client": False}
    for _ in range(20):
        for name, side, out, peer_in in (("client", client, c_out, s_in), ("server", server, s_out, c_in)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if all(done.values()):
            server.write(b"x")  # TLS 1.3: the server learns of a refused client certificate on I/O
            c_in.write(s_out.read())
            s_in.write(c_out.read())
            client.read(1)
            return
    raise AssertionError("handshake did not finish")


def _server_context(home: Path, manifest: dict, *, crl: bool = True) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(home / manifest["operator_cert"], home / manifest["operator_key"])
    ctx.load_verify_locations(home / manifest["trust_ca"])
    if crl:
        ctx.load_verify_locations(home / "certs/trust-ca.crl.pem")
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _client_context(home: Path, manifest: dict, cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(home / manifest["trust_ca"])
    ctx.load_cert_chain(home / cert, home / key)
    return ctx


def test_tls_mutual_authentication_with_crl(home, manifest):
    server_ctx = _server_context(home, manifest)
    for peer in manifest["peers"]:
        client_ctx = _client_context(home, manifest, peer["cert"], peer["key"])
        if peer["revoked"]:
            with pytest.raises(ssl.SSLError):
                _handshake(server_ctx, client_ctx)
            _handshake(_server_context(home, manifest, crl=False), client_ctx)  # only the CRL refuses it
        else:
            _handshake(server_ctx, client_ctx)
    rogue = _client_context(home, manifest, manifest["rogue"]["cert"], manifest["rogue"]["key"])
    with pytest.raises(ssl.SSLError):
        _handshake(server_ctx, rogue)


def test_init_refuses_an_existing_kit_and_force_renews_it(tmp_path):
    first = create_kit(tmp_path)
    with pytest.raises(KitExistsError):
        create_kit(tmp_path)
    (tmp_path / "store.db").write_bytes(b"old mail")
    (tmp_path / "blobs" / "ab").mkdir(parents=True)
    (tmp_path / "certs" / "README.md").write_text("kept", encoding="utf-8")
    old_leaf = _leaf(tmp_path, first["operator_cert"])
    second = create_kit(tmp_path, force=True)
    assert _leaf(tmp_path, second["operator_cert"]) != old_leaf
    assert second["peers"][0]["dn"] == first["peers"][0]["dn"]
    assert not (tmp_path / "store.db").exists() and not (tmp_path / "blobs").exists()
    assert (tmp_path / "certs" / "README.md").read_text(encoding="utf-8") == "kept"
    assert read_manifest(tmp_path) == second
    load_settings(tmp_path)


def test_init_refuses_a_home_with_only_a_config(tmp_path):
    (tmp_path / "config.toml").write_text("", encoding="utf-8")
    with pytest.raises(KitExistsError):
        create_kit(tmp_path)


def test_patients_and_bridge_are_configured(home, manifest):
    from mes_bridge.settings import load_bridge_settings
    from mssante_base.patients.ins import validate_ins

    patients = manifest["patients"]
    assert {p["state"] for p in patients} == {"active", "not_activated", "opposed", "closed", "pending"}
    assert any("2A" in p["ins"] for p in patients)  # a Corsican department
    for patient in patients:
        assert validate_ins(patient["ins"]).address == patient["address"]
    adults = [p for p in patients if "representatives" not in p]
    (child,) = [p for p in patients if "representatives" in p]
    for patient in adults:
        assert set(patient) == {"ins", "address", "state", "password", "email"}
    assert set(child) == {"ins", "address", "state", "activation_code", "representatives", "birth_date"}
    assert child["state"] == "pending" and child["representatives"] == [adults[0]["ins"]]
    seed = json.loads((home / "patients.json").read_text(encoding="utf-8"))["patients"]
    assert [p["ins"] for p in seed] == [p["ins"] for p in patients]
    for entry, patient in zip(seed, patients, strict=True):
        if "password" in patient:
            assert PasswordHasher().verify(entry["password_hash"], patient["password"])
        else:
            assert PasswordHasher().verify(entry["activation_code_hash"], patient["activation_code"])
            assert "password_hash" not in entry
    assert stat.S_IMODE((home / "patients.json").stat().st_mode) == 0o600
    settings = load_settings(home)
    bridge_cert = _leaf(home, manifest["bridge_cert"])
    assert name_to_dn(bridge_cert.subject) == name_to_dn(x509.Name.from_rfc4514_string(settings.patients.bridge_dn))
    listeners = manifest["listeners"]
    assert settings.patients.lmtp == f"127.0.0.1:{listeners['bridge_lmtp']['port']}"
    assert settings.patients.registry_url == f"https://127.0.0.1:{listeners['bridge_registry']['port']}"
    bridge = load_bridge_settings(home, settings.bridge)
    assert bridge.listeners.web is not None and bridge.listeners.web.port == listeners["web"]["port"]
    operator = _leaf(home, manifest["operator_cert"])
    assert [name_to_dn(x509.Name.from_rfc4514_string(dn)) for dn in bridge.trusted_operators] == [
        name_to_dn(operator.subject)]
