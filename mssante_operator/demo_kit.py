"""The demo kit written by ``mssante-operator init HOME``: a whole, self-consistent trust space in a folder.

One command gives a developer (or a demo script) everything ``serve`` needs and everything a peer
would hold: a CA standing for IGC-Santé with its CRL, the operator's certificate and DKIM key, two
peer operators (one revoked by the CRL yet still in the liste blanche, as happens for real), a rogue
operator outside the trust space, an annuaire with PER/ORG/APP/pharmacy mailboxes, their credentials,
mes_bridge's certificate and patients (one per state of a patient space), and ``demo.json``, the
manifest whose shape is a contract (see ARCHITECTURE.md). Paths in the config
and the manifest are relative to HOME, so the folder can be moved as a whole.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from stdnum.fr import nir

from mssante_base.annuaire import BalKind, MailboxEntry
from mssante_base.passwords import password_hasher
from mssante_base.patients.codes import hash_code, new_activation_code
from mssante_base.patients.ins import PATIENT_DOMAIN
from mssante_base.settings import CONFIG_FILE, LimitsSettings

from .trust_space import dev_pki
from .trust_space.dev_pki import Authority, Issued
from .trust_space.liste_blanche import ListedDomain, render_liste_blanche

MANIFEST_FILE = "demo.json"
LISTE_BLANCHE_FILE = "listeblanche.xml"
ANNUAIRE_FILE = "annuaire.json"
CREDENTIALS_FILE = "credentials.json"
LOCALHOST = "127.0.0.1"
DKIM_SELECTOR = "mss2026"

TRUST_CA_CERT = "certs/trust-ca.pem"
TRUST_CA_CRL = "certs/trust-ca.crl.pem"
# The dev CA's key stays in the kit (mode 0600) so that an operator can issue more test
# certificates (new peers, expired or revoked ones) for this trust space; IGC-Santé keeps its own.
TRUST_CA_KEY = "certs/trust-ca.key"
ROGUE_CA_CERT = "certs/rogue-ca.pem"
OPERATOR_CERT = "certs/operator.pem"
OPERATOR_KEY = "certs/operator.key"


@dataclass(frozen=True)
class Party:
    """An operator of the demo (ourselves, a peer, the rogue): its domain and certificate identity."""

    name: str
    domain: str
    host: str
    org: str
    ou: str  # the structure identifier IGC-Santé puts in OU
    st: str  # "Département (NN)"
    sender: str = ""
    description: str = ""
    revoked: bool = False


OPERATOR = Party(
    name="operator", domain="hopital-demo.mssante.fr", host="mx.hopital-demo.mssante.fr",
    org="CENTRE HOSPITALIER DEMO", ou="1130781234", st="Bouches-du-Rhône (13)",
    description="Centre hospitalier de démonstration",
)
PEERS = (
    Party(
        name="labo", domain="labo-biolab.mssante.fr", host="smtp.labo-biolab.mssante.fr",
        org="LABORATOIRE BIOLAB", ou="38012345600017", st="Rhône (69)",
        sender="resultats@labo-biolab.mssante.fr",
        description="Laboratoire de biologie médicale BioLab, opérateur de messagerie",
    ),
    Party(
        name="clinique", domain="clinique-ouest.mssante.fr", host="smtp.clinique-ouest.mssante.fr",
        org="CLINIQUE OUEST", ou="1350001234", st="Ille-et-Vilaine (35)",
        sender="secretariat@clinique-ouest.mssante.fr",
        description="Clinique de l'Ouest (certificat révoqué dans la CRL de démonstration)",
        revoked=True,
    ),
)
ROGUE = Party(
    name="rogue", domain="operateur-pirate.fr", host="smtp.operateur-pirate.fr",
    org="OPERATEUR PIRATE", ou="39999999900012", st="Paris (75)",
    sender="contact@operateur-pirate.fr",
)
# Listed, never served: shows a non-ASCII description, and a domain with a second server certificate.
EXTRA_LISTED = (
    ListedDomain(
        name="ehpad-les-tilleuls.mssante.fr",
        dn_text="CN=smtp.ehpad-les-tilleuls.mssante.fr,OU=1420001234,O=EHPAD LES TILLEULS,ST=Loire (42),C=FR",
        description="EHPAD « Les Tilleuls » — Saint-Étienne, médecine gériatrique",
    ),
    ListedDomain(
        name="labo-biolab.mssante.fr",
        dn_text="CN=smtp2.labo-biolab.mssante.fr,OU=38012345600017,O=LABORATOIRE BIOLAB,ST=Rhône (69),C=FR",
        description="Laboratoire de biologie médicale BioLab, second serveur",
    ),
)

_D = OPERATOR.domain
MAILBOXES = (
    MailboxEntry(
        address=f"dr.martin@{_D}", kind=BalKind.PER, display_name="Dr Claire Martin",
        rpps="10001234567", service="Cardiologie", profession_code="10", profession_label="Médecin",
    ),
    MailboxEntry(
        address=f"ines.secretaire@{_D}", kind=BalKind.PER, display_name="Inès Moreau",
        rpps="10009876543", service="Cardiologie",
    ),
    MailboxEntry(
        address=f"paul.durand@{_D}", kind=BalKind.PER, display_name="Dr Paul Durand",
        rpps="10005550123", service="Psychiatrie", profession_code="10", profession_label="Médecin",
        liste_rouge=True,
    ),
    MailboxEntry(
        address=f"cardiologie@{_D}", kind=BalKind.ORG, display_name="Service de cardiologie",
        structure_id=OPERATOR.ou, service="Cardiologie",
        delegates=(f"dr.martin@{_D}", f"ines.secretaire@{_D}"),
    ),
    MailboxEntry(
        address=f"labo-auto@{_D}", kind=BalKind.APP, display_name="Laboratoire — envoi automatique",
        structure_id=OPERATOR.ou, service="Laboratoire de biologie",
    ),
    MailboxEntry(
        address=f"pharmacie.centrale@{_D}", kind=BalKind.ORG, display_name="Pharmacie centrale",
        structure_id="1130785678", service="Pharmacie", profession_code="21",
        profession_label="Pharmacien", pharmacy=True,
    ),
)

# A professional of a peer operator, in the annuaire as the national extraction would list them, so that
# they may write to our patients (through our MTA) and the patients may answer.
REMOTE_MAILBOXES = (
    MailboxEntry(
        address=PEERS[0].sender, kind=BalKind.ORG, display_name="Laboratoire BioLab — résultats",
        structure_id=PEERS[0].ou, service="Biologie médicale",
    ),
)

# mes_bridge (Mon espace santé): its certificate, and the patients of its registry, one per state.
BRIDGE = Party(
    name="bridge", domain=PATIENT_DOMAIN, host="bridge.patient.mssante.fr",
    org="MON ESPACE SANTE DEMO", ou="180035024", st="Paris (75)",
)
BRIDGE_CERT, BRIDGE_KEY = "certs/bridge.pem", "certs/bridge.key"
PATIENTS_FILE = "patients.json"


@dataclass(frozen=True)
class DemoPatient:
    ins13: str  # the matricule without its key (computed: python-stdnum)
    given_name: str
    family_name: str
    state: str
    birth_date: str  # the INS identity traits: consistent with the matricule's year and month
    parent: str | None = None  # a child's space: the ins13 of the parent who represents them

    @property
    def sex(self) -> str:
        return "M" if self.ins13[0] == "1" else "F"

    @property
    def ins(self) -> str:
        return self.ins13 + nir.calc_check_digits(self.ins13)


PATIENTS = (
    DemoPatient("2850775123456", "Sophie", "Lefèvre", "active", "1985-07-12"),
    DemoPatient("19211" + "2A" + "004017", "Lucas", "Santoni", "not_activated", "1992-11-03"),  # Corse-du-Sud
    DemoPatient("1780369045032", "Marc", "Girard", "opposed", "1978-03-21"),
    DemoPatient("2601213055009", "Jeanne", "Roux", "closed", "1960-12-05"),
    # Sophie's daughter: her code letter is out (opt-out window open); Sophie activates it in her own space.
    DemoPatient("2160575123458", "Léa", "Lefèvre", "pending", "2016-05-14", parent="2850775123456"),
)

# What a kit consists of, so that --force removes exactly that (plus the store, see create_kit).
_KIT_FILES = (CONFIG_FILE, MANIFEST_FILE, LISTE_BLANCHE_FILE, ANNUAIRE_FILE, CREDENTIALS_FILE, PATIENTS_FILE)
_KIT_DIRS = ("dkim", "certs/peers", "certs/mailboxes", "clients")
_STORE_FILES = ("store.db", "store.db-wal", "store.db-shm", "store.db-journal",
                "bridge.db", "bridge.db-wal", "bridge.db-shm", "bridge.db-journal", "bridge-web.key")
_STORE_DIRS = ("blobs", "bridge-blobs")


class KitExistsError(FileExistsError):
    """HOME already holds a kit; refusing to overwrite keys and mail without ``--force``."""


def create_kit(home: Path, *, force: bool = False) -> dict[str, Any]:
    """Write a fresh demo kit into ``home`` and return its manifest (also written as demo.json).

    Without ``force``, a HOME holding config.toml or demo.json raises KitExistsError. With ``force``
    the old kit is removed first, and so are the SQLite store (store.db*) and the blobs folder:
    mail stored under the old keys and certificates must not outlive them. Other files are kept.
    demo.json is written last, so its presence means the kit is complete.
    """
    home = Path(home)
    _prepare_home(home, force)
    trust_ca = dev_pki.make_ca("AC DEMO IGC-SANTE ELEMENTAIRE ORGANISATIONS", "ESPACE DE CONFIANCE DEMO")
    rogue_ca = dev_pki.make_ca("AC OPERATEUR PIRATE", ROGUE.org, ou="HORS ESPACE DE CONFIANCE")
    operator_cert = _issue_party(trust_ca, OPERATOR, extra_dns=("localhost",))
    peer_certs = [(peer, _issue_party(trust_ca, peer)) for peer in PEERS]
    _write_trust_space(home, trust_ca, rogue_ca, operator_cert, peer_certs)

    _write_issued(home, operator_cert, OPERATOR_CERT, OPERATOR_KEY)
    operator_dkim_key, operator_txt = _write_dkim(home, OPERATOR.domain)
    static_keys = {_dkim_record_name(OPERATOR.domain): operator_txt}
    peers = []
    for peer, issued in peer_certs:
        peer_entry, txt = _write_peer(home, peer, issued)
        peers.append(peer_entry)
        static_keys[_dkim_record_name(peer.domain)] = txt
    rogue = _write_rogue(home, rogue_ca)
    _write_json(home / ANNUAIRE_FILE, {"entries": [entry.to_json() for entry in (*MAILBOXES, *REMOTE_MAILBOXES)]})
    mailboxes = _write_mailboxes(home, trust_ca)
    bridge_cert = _issue_party(trust_ca, BRIDGE, extra_dns=("localhost",))
    _write_issued(home, bridge_cert, BRIDGE_CERT, BRIDGE_KEY)
    patients = _write_patients(home)

    names = [*_LISTENER_TLS, *_BRIDGE_LISTENERS, "metrics"]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    config = _config(operator_dkim_key, static_keys)
    config["listeners"] = {name: {"host": LOCALHOST, "port": ports[name], "tls": _LISTENER_TLS[name]}
                           for name in _LISTENER_TLS}
    config["patients"] = {
        "registry_url": f"https://{LOCALHOST}:{ports['bridge_registry']}",
        "lmtp": f"{LOCALHOST}:{ports['bridge_lmtp']}",
        "bridge_dn": bridge_cert.dn,
        "state_cache_ttl": "30s",
    }
    config["bridge"] = _bridge_config(ports, operator_dn=operator_cert.dn)
    config["metrics"] = {"listen": f"{LOCALHOST}:{ports['metrics']}"}  # Prometheus text, plain HTTP on loopback
    (home / CONFIG_FILE).write_text(_CONFIG_HEADER + tomli_w.dumps(config), encoding="utf-8")

    manifest = {
        "operator": {
            "domain": OPERATOR.domain, "dkim_selector": DKIM_SELECTOR, "dkim_public_txt": operator_txt,
        },
        "listeners": {name: {"host": LOCALHOST, "port": port} for name, port in ports.items()},
        "trust_ca": TRUST_CA_CERT,
        "operator_cert": OPERATOR_CERT,
        "operator_key": OPERATOR_KEY,
        "peers": peers,
        "rogue": rogue,
        "mailboxes": mailboxes,
        "patients": patients,
        "bridge_cert": BRIDGE_CERT,
        "bridge_key": BRIDGE_KEY,
    }
    _write_clients(home, manifest)
    _write_json(home / MANIFEST_FILE, manifest, private=True)
    return manifest


CLIENTS_DIR = "clients"
CLIENT_MAILBOX = "dr.martin"


def _write_clients(home: Path, manifest: dict[str, Any]) -> None:
    """Ready-made configurations of two real mail clients for Dr Martin (0600: they hold the password),
    trusting the kit's CA only: isync's ``mbsyncrc`` (a Maildir in clients/Maildir) and mutt's ``muttrc``.
    Both dial "localhost", a DNS name of the kit's server certificate (isync matches DNS names only)."""
    box = next(m for m in manifest["mailboxes"] if m["address"].startswith(CLIENT_MAILBOX + "@"))
    folder = (home / CLIENTS_DIR).resolve()
    folder.mkdir(exist_ok=True)
    ca = (home / manifest["trust_ca"]).resolve()
    imaps, submissions = manifest["listeners"]["imaps"]["port"], manifest["listeners"]["submissions"]["port"]
    user = box["address"]
    quoted = user.replace("@", "%40")
    mbsyncrc = f"""\
IMAPAccount demo
Host localhost
Port {imaps}
User {user}
Pass {box["password"]}
SSLType IMAPS
SSLVersions TLSv1.2 TLSv1.3
CertificateFile {ca}
SystemCertificates no

IMAPStore demo-server
Account demo

MaildirStore demo-local
Path {folder}/Maildir/
Inbox {folder}/Maildir/INBOX
SubFolders Verbatim

Channel demo
Far :demo-server:
Near :demo-local:
Patterns *
Create Near
SyncState *
"""
    muttrc = f"""\
set from = "{user}"
set folder = "imaps://{quoted}@localhost:{imaps}/"
set spoolfile = "+INBOX"
set imap_user = "{user}"
set imap_pass = "{box["password"]}"
set smtp_url = "smtps://{quoted}@localhost:{submissions}/"
set smtp_pass = "{box["password"]}"
set ssl_force_tls = yes
set certificate_file = "{ca}"
"""
    for name, text in (("mbsyncrc", mbsyncrc), ("muttrc", muttrc)):
        path = folder / name
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
    (folder / "Maildir").mkdir(exist_ok=True)


def read_manifest(home: Path) -> dict[str, Any]:
    """The demo.json of a kit."""
    return json.loads((Path(home) / MANIFEST_FILE).read_text(encoding="utf-8"))


def free_ports(count: int, host: str = LOCALHOST) -> list[int]:
    """``count`` distinct ports free on ``host`` now; all sockets stay bound until all are chosen."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _prepare_home(home: Path, force: bool) -> None:
    existing = [name for name in (CONFIG_FILE, MANIFEST_FILE) if (home / name).exists()]
    if existing and not force:
        raise KitExistsError(
            f"{home} already holds {' and '.join(existing)}; use --force to replace the kit "
            "(its certificates, keys and stored mail)"
        )
    if force:
        _remove_kit(home)
    home.mkdir(parents=True, exist_ok=True)


def _remove_kit(home: Path) -> None:
    """Remove what a kit writes, plus the store, leaving unrelated files (e.g. certs/README.md)."""
    for name in (*_KIT_DIRS, *_STORE_DIRS):
        shutil.rmtree(home / name, ignore_errors=True)
    for name in (*_KIT_FILES, *_STORE_FILES):
        (home / name).unlink(missing_ok=True)
    certs = home / "certs"
    if certs.is_dir():
        for path in [*certs.glob("*.pem"), *certs.glob("*.key")]:
            path.unlink()
        if not any(certs.iterdir()):
            certs.rmdir()


def _write_trust_space(
    home: Path, trust_ca: Authority, rogue_ca: Authority, operator_cert: Issued,
    peer_certs: list[tuple[Party, Issued]],
) -> None:
    """The CAs, the CRL revoking the revoked peers, and the liste blanche (revoked peers stay listed)."""
    dev_pki.write_chain(home / TRUST_CA_CERT, [trust_ca.cert])
    dev_pki.write_key(home / TRUST_CA_KEY, trust_ca.key)
    dev_pki.write_chain(home / ROGUE_CA_CERT, [rogue_ca.cert])
    revoked = [issued.cert.serial_number for peer, issued in peer_certs if peer.revoked]
    dev_pki.write_crl(home / TRUST_CA_CRL, dev_pki.make_crl(trust_ca, revoked))
    listed = [_listed(OPERATOR, operator_cert), *(_listed(peer, issued) for peer, issued in peer_certs)]
    (home / LISTE_BLANCHE_FILE).write_bytes(render_liste_blanche([*listed, *EXTRA_LISTED], dev_pki.now()))


def _issue_party(ca: Authority, party: Party, extra_dns: Iterable[str] = ()) -> Issued:
    """An operator's IGC-Santé-like certificate: server and client, SAN host (+ extras) and 127.0.0.1."""
    return dev_pki.issue(
        ca, cn=party.host, ou=party.ou, org=party.org, st=party.st,
        dns_names=(party.host, *extra_dns), ip_addresses=(LOCALHOST,),
    )


def _write_issued(home: Path, issued: Issued, cert_path: str, key_path: str) -> None:
    dev_pki.write_chain(home / cert_path, issued.chain)
    dev_pki.write_key(home / key_path, issued.key)


def _write_dkim(home: Path, domain: str) -> tuple[str, str]:
    """Write a DKIM key for ``domain``; returns (its path relative to HOME, its TXT record)."""
    private_pem, txt = dev_pki.make_dkim_key()
    path = f"dkim/{domain}.key"
    dev_pki.write_dkim_key(home / path, private_pem)
    return path, txt


def _dkim_record_name(domain: str) -> str:
    return f"{DKIM_SELECTOR}._domainkey.{domain}"


def _write_peer(home: Path, peer: Party, issued: Issued) -> tuple[dict[str, Any], str]:
    """Write a peer's certificate, key and DKIM key; returns its manifest entry and its DKIM TXT."""
    cert_path, key_path = f"certs/peers/{peer.name}.pem", f"certs/peers/{peer.name}.key"
    _write_issued(home, issued, cert_path, key_path)
    dkim_key, txt = _write_dkim(home, peer.domain)
    return {
        "name": peer.name, "domain": peer.domain, "sender": peer.sender,
        "cert": cert_path, "key": key_path, "dn": issued.dn,
        "dkim_selector": DKIM_SELECTOR, "dkim_key": dkim_key, "revoked": peer.revoked,
    }, txt


def _write_rogue(home: Path, rogue_ca: Authority) -> dict[str, str]:
    """The rogue looks like an operator (same DN pattern) but chains to its own CA."""
    cert_path, key_path = "certs/rogue.pem", "certs/rogue.key"
    _write_issued(home, _issue_party(rogue_ca, ROGUE), cert_path, key_path)
    return {"domain": ROGUE.domain, "sender": ROGUE.sender, "cert": cert_path, "key": key_path}


def _listed(party: Party, issued: Issued) -> ListedDomain:
    return ListedDomain(
        name=party.domain, dn_text=issued.dn, description=party.description,
        responsable_contact=f"dpo@{party.domain}", support_contact=f"support@{party.domain}",
        updated=dev_pki.now().strftime("%Y-%m-%d"),
    )


def _write_mailboxes(home: Path, ca: Authority) -> list[dict[str, Any]]:
    """A client certificate and a password per mailbox: hashes to credentials.json, clear to demo.json."""
    hasher = password_hasher()
    credentials: dict[str, str] = {}
    manifest: list[dict[str, Any]] = []
    for entry in MAILBOXES:
        password = secrets.token_urlsafe(12)
        credentials[entry.address] = hasher.hash(password)
        cert_path, key_path = f"certs/mailboxes/{entry.address}.pem", f"certs/mailboxes/{entry.address}.key"
        _write_issued(home, _issue_mailbox(ca, entry), cert_path, key_path)
        manifest.append({
            "address": entry.address, "kind": entry.kind.value, "password": password,
            "rpps": entry.rpps, "delegates": list(entry.delegates), "pharmacy": entry.pharmacy,
            "cert": cert_path, "key": key_path,
        })
    _write_json(home / CREDENTIALS_FILE, credentials, private=True)
    return manifest


def _write_patients(home: Path) -> list[dict[str, Any]]:
    """The bridge's registry seed (password hashes) and the manifest's patients (clear passwords)."""
    hasher = password_hasher()
    seed, manifest = [], []
    by_ins13 = {patient.ins13: patient for patient in PATIENTS}
    for patient in PATIENTS:
        entry = {"ins": patient.ins, "state": patient.state, "given_name": patient.given_name,
                 "family_name": patient.family_name, "birth_date": patient.birth_date, "sex": patient.sex}
        shown = {"ins": patient.ins, "address": f"{patient.ins.lower()}@{PATIENT_DOMAIN}", "state": patient.state}
        if patient.parent is None:
            password = secrets.token_urlsafe(12)
            email = f"{patient.given_name.lower()}.{patient.ins[-4:]}@courriel.example"  # notifications only
            entry |= {"password_hash": hasher.hash(password), "email": email}
            shown |= {"password": password, "email": email}
        else:  # a child: no login of their own, a provisional code for the parent to activate the space with
            code = new_activation_code()
            parent = by_ins13[patient.parent].ins
            entry |= {"activation_code_hash": hash_code(code), "representatives": [parent]}
            shown |= {"activation_code": code, "representatives": [parent], "birth_date": patient.birth_date}
        seed.append(entry)
        manifest.append(shown)
    _write_json(home / PATIENTS_FILE, {"patients": seed}, private=True)
    return manifest


def _bridge_config(ports: dict[str, int], *, operator_dn: str) -> dict[str, Any]:
    """mes_bridge's [bridge] table: its store, certificate, the operator it trusts and where it submits."""
    return {
        "database": "sqlite:///bridge.db",
        "blob_dir": "bridge-blobs",
        "cert": BRIDGE_CERT,
        "key": BRIDGE_KEY,
        "ca_bundle": TRUST_CA_CERT,
        "crl_files": [TRUST_CA_CRL],
        "trusted_operators": [operator_dn],
        "patients_file": PATIENTS_FILE,
        "operator_submission": f"{LOCALHOST}:{ports['submissions']}",
        "listeners": {
            "lmtp": {"host": LOCALHOST, "port": ports["bridge_lmtp"]},
            "registry": {"host": LOCALHOST, "port": ports["bridge_registry"]},
            "web": {"host": LOCALHOST, "port": ports["web"]},
        },
    }


def _issue_mailbox(ca: Authority, entry: MailboxEntry) -> Issued:
    """A client-only certificate naming the mailbox (CN, SAN email) and its RPPS or structure id (OU)."""
    return dev_pki.issue(
        ca, cn=entry.address, ou=entry.rpps or entry.structure_id or OPERATOR.ou,
        org=OPERATOR.org, st=OPERATOR.st, emails=(entry.address,), server=False, client=True,
    )


_CONFIG_HEADER = (
    "# Written by `mssante-operator init`. Relative paths are taken from the folder holding this file.\n"
    "# The [limits] section repeats the defaults so that they are visible; change them here.\n\n"
)


# Contract names of the listeners (demo.json) and how each starts TLS.
_LISTENER_TLS = {"mta": "starttls", "mtas": "implicit", "submission": "starttls", "submissions": "implicit",
                 "imap": "starttls", "imaps": "implicit", "autoconfig": "implicit"}  # autoconfig: HTTPS
# mes_bridge's listeners (demo.json names): LMTP over implicit TLS, the registry over HTTPS.
# The patient web space is "web" (HTTPS for browsers, no client certificate).
_BRIDGE_LISTENERS = ("bridge_lmtp", "bridge_registry", "web")


def _config(dkim_key: str, static_keys: dict[str, str]) -> dict[str, Any]:
    """config.toml as data; it must validate with :func:`mssante_operator.config.load_settings`."""
    return {
        "operator": {"domain": OPERATOR.domain, "hostname": OPERATOR.host},
        "storage": {"url": "sqlite:///store.db", "blob_dir": "blobs"},
        "tls": {"cert": OPERATOR_CERT, "key": OPERATOR_KEY},
        "trust_space": {
            "ca_bundle": TRUST_CA_CERT, "crl_files": [TRUST_CA_CRL],
            "liste_blanche": LISTE_BLANCHE_FILE, "refresh_interval": "1h",
        },
        "dkim": {
            "selector": DKIM_SELECTOR, "private_key": dkim_key, "key_source": "static",
            "static_keys": static_keys,
        },
        "annuaire": {"backend": "file", "file": ANNUAIRE_FILE},
        "limits": _default_limits(),
        # The peers of the kit run nowhere: give them a next hop here (e.g. a test peer) to deliver to them.
        "outbound": {"routes": {}, "retry_schedule": ["1m", "5m", "15m", "1h", "4h"], "max_lifetime": "5d"},
    }


def _default_limits() -> dict[str, Any]:
    """The [limits] defaults of the Settings schema, durations written the way an operator would."""
    durations = {"idle_timeout", "session_timeout"}
    return {
        key: _duration_text(value) if key in durations else value
        for key, value in LimitsSettings().model_dump().items()
    }


def _duration_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _write_json(path: Path, data: object, *, private: bool = False) -> None:
    """Write JSON (UTF-8, readable accents); ``private`` files hold secrets and get mode 0600."""
    text = (json.dumps(data, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    if private:
        dev_pki.write_secret(path, text)
    else:
        path.write_bytes(text)
