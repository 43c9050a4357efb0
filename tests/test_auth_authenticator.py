"""Authenticator: who may log in, as whom, by password, certificate or bearer token; failures slowed."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from argon2 import PasswordHasher
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from jwt.algorithms import RSAAlgorithm

from mssante_base.annuaire import Annuaire, AnnuaireUnavailable, BalKind, MailboxEntry
from mssante_base.ratelimit import FailureLimiter, Limits
from mssante_base.trust.tls import PeerTls, certificate_fingerprint
from mssante_operator.auth import (
    CLIENT_MESSAGE,
    AuthenticationFailed,
    Authenticator,
    CredentialStore,
    CredentialsUnavailable,
    Principal,
    TokenKeysUnavailable,
    TokenValidator,
)
from mssante_operator.store import Store
from mssante_operator.store.accounts import AccountState
from mssante_operator.trust_space import dev_pki

D = "hopital-demo.mssante.fr"
MARTIN = f"dr.martin@{D}"
MARTIN_LIBERAL = f"claire.martin@{D}"
INES = f"ines.secretaire@{D}"
CARDIO = f"cardiologie@{D}"
PHARMA = f"pharmacie.centrale@{D}"
LABO = f"labo-auto@{D}"
CAB = f"cabinet@{D}"
ISSUER = "https://psc.example/realms/esante-wallet"
AUDIENCE = "mssante-operator"

ENTRIES = (
    MailboxEntry(address=MARTIN, kind=BalKind.PER, rpps="10001234567"),
    # A second PER mailbox of the same professional (another practice).
    MailboxEntry(address=MARTIN_LIBERAL, kind=BalKind.PER, rpps="10001234567"),
    MailboxEntry(address=INES, kind=BalKind.PER, rpps="10009876543"),
    MailboxEntry(address=CARDIO, kind=BalKind.ORG, structure_id="1130781234", delegates=(MARTIN, INES)),
    MailboxEntry(address=PHARMA, kind=BalKind.ORG, structure_id="1130785678", pharmacy=True),
    MailboxEntry(address=LABO, kind=BalKind.APP, structure_id="1130781234"),
    MailboxEntry(address=CAB, kind=BalKind.CAB),
)
PASSWORDS = {MARTIN: "pw-martin", INES: "pw-ines", CARDIO: "pw-cardio", LABO: "pw-labo", CAB: "pw-cab"}
FAST = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)


class MemoryAnnuaire(Annuaire):
    """An in-memory annuaire; ``unavailable`` makes every call fail temporarily."""

    def __init__(self, entries: tuple[MailboxEntry, ...] = ENTRIES) -> None:
        self.entries = {entry.address: entry for entry in entries}
        self.unavailable = False

    def _check(self) -> None:
        if self.unavailable:
            raise AnnuaireUnavailable("directory down")

    async def lookup(self, address: str) -> MailboxEntry | None:
        self._check()
        return self.entries.get(address.strip().lower())

    async def search(self, text: str, limit: int = 50) -> list[MailboxEntry]:
        self._check()
        return [e for e in self.entries.values() if text.lower() in e.address and not e.liste_rouge][:limit]

    async def by_rpps(self, rpps: str) -> list[MailboxEntry]:
        self._check()
        return [e for e in self.entries.values() if e.rpps == rpps]

    async def by_structure(self, structure_id: str) -> list[MailboxEntry]:
        self._check()
        return [e for e in self.entries.values() if e.structure_id == structure_id]

    async def delegated_to(self, address: str) -> list[MailboxEntry]:
        self._check()
        return [e for e in self.entries.values() if address in e.delegates]


@pytest.fixture(scope="module")
def ca() -> dev_pki.Authority:
    return dev_pki.make_ca("AC TEST IGC-SANTE", "TEST")


@pytest.fixture(scope="module")
def leaf_key() -> rsa.RSAPrivateKey:
    return dev_pki.make_key()


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def jwks(tmp_path, signing_key) -> Path:
    key = json.loads(RSAAlgorithm.to_jwk(signing_key.public_key()))
    key.update({"kid": "psc1", "use": "sig", "alg": "RS256"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [key]}), encoding="utf-8")
    return path


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "blobs")
    store.migrate()
    yield store
    store.close()


@pytest.fixture
def credentials(store) -> CredentialStore:
    kinds = {e.address: e.kind.value for e in ENTRIES}
    for address, password in PASSWORDS.items():
        store.accounts.add(address, kinds.get(address, "PER"), actor="test", at=store.now(),
                           password_hash=FAST.hash(password))
    return CredentialStore(store.accounts, hasher=FAST)


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


class Setup:
    def __init__(self, credentials: CredentialStore, jwks: Path | None,
                 entries: tuple[MailboxEntry, ...] = ENTRIES) -> None:
        self.annuaire = MemoryAnnuaire(entries)
        self.clock = Clock()
        self.limiter = FailureLimiter(
            clock=self.clock, account=Limits(free=2, lockout=4), ip=Limits(free=5, lockout=20),
        )
        self.slept: list[float] = []
        self.tokens = TokenValidator(ISSUER, AUDIENCE, jwks) if jwks else None

        async def sleep(delay: float) -> None:
            self.slept.append(delay)

        self.auth = Authenticator(self.annuaire, credentials, self.tokens, self.limiter, sleep=sleep)

    def run(self, coro):
        return asyncio.run(coro)

    def fails(self, coro, reason: str) -> AuthenticationFailed:
        with pytest.raises(AuthenticationFailed, match=reason) as info:
            asyncio.run(coro)
        assert info.value.client_message == CLIENT_MESSAGE
        return info.value


@pytest.fixture
def s(credentials, jwks) -> Setup:
    return Setup(credentials, jwks)


# -- Principal ----------------------------------------------------------------------------------------


def test_principal_rights():
    entries = {e.address: e for e in ENTRIES}
    principal = Principal(login=MARTIN, mechanism="PLAIN", own=entries[MARTIN], delegated=(entries[CARDIO],))
    assert principal.addresses == (MARTIN, CARDIO)
    assert principal.may_open(MARTIN) and principal.may_open(" Cardiologie@Hopital-Demo.mssante.fr ")
    assert principal.may_send_as(CARDIO)
    assert not principal.may_open(INES) and not principal.may_send_as(PHARMA)
    assert principal.acting_as == MARTIN


# -- passwords ----------------------------------------------------------------------------------------


def test_password_per(s):
    principal = s.run(s.auth.password(" Dr.Martin@Hopital-Demo.mssante.fr", "pw-martin", "10.0.0.1"))
    assert principal.login == MARTIN
    assert principal.mechanism == "PLAIN"
    assert principal.own.kind is BalKind.PER
    assert [e.address for e in principal.delegated] == [CARDIO]
    assert principal.authzid == ""
    assert s.slept == []


def test_password_app(s):
    principal = s.run(s.auth.password(LABO, "pw-labo", "10.0.0.1", mechanism="LOGIN"))
    assert (principal.login, principal.mechanism, principal.delegated) == (LABO, "LOGIN", ())
    assert principal.may_send_as(LABO) and not principal.may_send_as(CARDIO)


def test_password_runs_off_the_event_loop(s, monkeypatch):
    threads = []
    original = s.auth.credentials.verify_hash

    def verify(address, password, stored):
        threads.append(threading.current_thread())
        return original(address, password, stored)

    monkeypatch.setattr(s.auth.credentials, "verify_hash", verify)
    s.run(s.auth.password(MARTIN, "pw-martin", "ip"))
    assert threads and threads[0] is not threading.main_thread()


@pytest.mark.parametrize(
    ("login", "password", "reason"),
    [
        (MARTIN, "Guess-1", "wrong password"),
        (MARTIN, "pw-ines", "wrong password"),
        (f"ghost@{D}", "pw-martin", "no such mailbox"),
        ("", "pw-martin", "no such mailbox"),
        (CARDIO, "pw-cardio", "ORG mailbox cannot log in"),
        (CAB, "pw-cab", "CAB mailbox cannot log in"),
        (MARTIN_LIBERAL, "Guess-2", "wrong password"),  # in the annuaire, no password set
    ],
)
def test_password_refused(s, login, password, reason):
    error = s.fails(s.auth.password(login, password, "10.0.0.1"), reason)
    assert password not in error.reason


def test_reason_cannot_forge_log_lines(s):
    error = s.fails(s.auth.password("x@h.fr\r\nINFO forged", "pw", "ip"), "no such mailbox")
    assert "\n" not in error.reason and "\r" not in error.reason


def test_password_authzid_of_a_delegated_org(s):
    principal = s.run(s.auth.password(INES, "pw-ines", "ip", authzid=CARDIO.upper()))
    assert principal.login == INES
    assert principal.authzid == CARDIO
    assert principal.acting_as == CARDIO
    assert principal.may_open(CARDIO) and principal.may_open(INES)


def test_password_authzid_same_as_login(s):
    assert s.run(s.auth.password(INES, "pw-ines", "ip", authzid=INES)).authzid == ""


@pytest.mark.parametrize("authzid", [PHARMA, MARTIN, LABO, f"ghost@{D}"])
def test_password_authzid_not_delegated(s, authzid):
    s.fails(s.auth.password(INES, "pw-ines", "ip", authzid=authzid), f"not a delegate of {authzid}")


def test_failures_are_delayed_then_locked_out(s):
    for _ in range(2):
        s.fails(s.auth.password(MARTIN, "wrong", "10.0.0.1"), "wrong password")
    assert s.slept == []  # the account's two free failures
    error = s.fails(s.auth.password(MARTIN, "wrong", "10.0.0.2"), "wrong password")
    assert error.delay == 1.0 and s.slept == [1.0]
    s.fails(s.auth.password(MARTIN, "wrong", "10.0.0.3"), "wrong password")
    assert s.slept == [1.0, 2.0]
    # Locked: even the right password is refused, without being checked, and answered late.
    error = s.fails(s.auth.password(MARTIN, "pw-martin", "10.0.0.4"), "locked out")
    assert error.delay == 2.0
    # Other accounts are unaffected; the lock ends when failures leave the window.
    assert s.run(s.auth.password(INES, "pw-ines", "10.0.0.4")).login == INES
    s.clock.now += 901
    assert s.run(s.auth.password(MARTIN, "pw-martin", "10.0.0.4")).login == MARTIN


def test_success_clears_the_account_failures(s):
    for _ in range(3):
        s.fails(s.auth.password(MARTIN, "wrong", "ip"), "wrong password")
    s.run(s.auth.password(MARTIN, "pw-martin", "ip"))
    s.slept.clear()
    s.fails(s.auth.password(MARTIN, "wrong", "ip"), "wrong password")
    assert s.slept == []


def test_a_lockout_does_not_block_certificates_or_tokens(s, ca, leaf_key, signing_key):
    for _ in range(4):
        s.fails(s.auth.password(MARTIN, "wrong", "ip"), "wrong password")
    assert s.limiter.locked(MARTIN, "ip")
    cert = dev_pki.issue(ca, cn=MARTIN, ou="1", org="H", st="S", emails=(MARTIN,), server=False, key=leaf_key)
    assert s.run(s.auth.certificate(cert.cert, "ip")).login == MARTIN
    s.clock.now += 901
    for _ in range(4):
        s.fails(s.auth.password(MARTIN, "wrong", "ip"), "wrong password")
    assert s.run(s.auth.bearer(token(signing_key), "ip", MARTIN)).login == MARTIN


def test_annuaire_unavailable_is_temporary_and_not_counted(s):
    s.annuaire.unavailable = True
    for _ in range(5):
        with pytest.raises(AnnuaireUnavailable):
            s.run(s.auth.password(MARTIN, "pw-martin", "ip"))
    assert s.limiter.delay_for(MARTIN, "ip") == 0 and s.slept == []
    s.annuaire.unavailable = False
    assert s.run(s.auth.password(MARTIN, "pw-martin", "ip")).login == MARTIN


def test_credentials_unavailable_is_temporary(s, store):
    store.engine.dispose()
    Path(store.engine.url.database).unlink()
    Path(store.engine.url.database).mkdir()  # the store cannot be read
    with pytest.raises(CredentialsUnavailable):
        s.run(s.auth.password(MARTIN, "pw-martin", "ip"))


def test_logs_carry_reasons_never_secrets(s, caplog, signing_key):
    with caplog.at_level(logging.DEBUG):
        s.fails(s.auth.password(MARTIN, "Secret-Guess-1", "ip"), "wrong password")
        s.run(s.auth.password(MARTIN, "pw-martin", "ip"))
        bad = token(signing_key, aud="other")
        s.fails(s.auth.bearer(bad, "ip"), "wrong audience")
    assert "wrong password" in caplog.text and "wrong audience" in caplog.text
    assert "Secret-Guess" not in caplog.text and "pw-martin" not in caplog.text and bad not in caplog.text


# -- certificates -------------------------------------------------------------------------------------


def mailbox_cert(ca, key, entry_address: str, ou: str = "1130781234") -> x509.Certificate:
    """Like demo_kit._issue_mailbox: CN and email SAN = the address, client-only."""
    return dev_pki.issue(
        ca, cn=entry_address, ou=ou, org="CENTRE HOSPITALIER DEMO", st="Bouches-du-Rhône (13)",
        emails=(entry_address,), server=False, client=True, key=key,
    ).cert


def personal_cert(ca, key, uid: str, *, email: str | None = None, ou: str | None = None) -> x509.Certificate:
    start = dev_pki.now() - dev_pki.BACKDATE
    unit = [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou)] if ou else []
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            *unit,
            x509.NameAttribute(NameOID.USER_ID, uid),
            x509.NameAttribute(NameOID.COMMON_NAME, "MARTIN CLAIRE"),
        ]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dev_pki.DEFAULT_VALIDITY)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    if email:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
    return builder.sign(ca.key, hashes.SHA256())


def test_certificate_email_san_per(s, ca, leaf_key):
    cert = mailbox_cert(ca, leaf_key, MARTIN, ou="10001234567")
    peer = PeerTls(version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256", certificate=cert)
    principal = s.run(s.auth.certificate(peer, "ip"))
    assert (principal.login, principal.mechanism) == (MARTIN, "EXTERNAL")
    assert [e.address for e in principal.delegated] == [CARDIO]


def test_certificate_email_san_app(s, ca, leaf_key):
    principal = s.run(s.auth.certificate(mailbox_cert(ca, leaf_key, LABO), "ip"))
    assert principal.login == LABO and principal.own.kind is BalKind.APP


def test_certificate_with_authzid_of_delegated_org(s, ca, leaf_key):
    principal = s.run(s.auth.certificate(mailbox_cert(ca, leaf_key, INES), "ip", authzid=CARDIO))
    assert (principal.login, principal.authzid) == (INES, CARDIO)
    s.fails(s.auth.certificate(mailbox_cert(ca, leaf_key, INES), "ip", authzid=PHARMA), "not a delegate")


def test_certificate_of_a_structure_maps_to_its_app_mailbox(s, ca, leaf_key):
    server_cert = dev_pki.issue(
        ca, cn="lab.hopital-demo.mssante.fr", ou="1130781234", org="H", st="S", server=False, key=leaf_key,
    )
    principal = s.run(s.auth.certificate(server_cert.cert, "ip"))
    assert (principal.login, principal.own.kind) == (LABO, BalKind.APP)  # not the ORG mailbox of that structure


def test_a_person_certificate_never_maps_to_the_structure_app_mailbox(s, ca, leaf_key):
    unknown_person = personal_cert(ca, leaf_key, "819999999999", ou="1130781234")  # OU: the lab's structure
    s.fails(s.auth.certificate(unknown_person, "ip"), "names no mailbox")


def test_a_structure_with_several_app_mailboxes_needs_the_authzid(credentials, jwks, ca, leaf_key):
    second = MailboxEntry(address="radio@hopital-demo.mssante.fr", kind=BalKind.APP, structure_id="1130781234")
    setup = Setup(credentials, jwks, entries=(*ENTRIES, second))
    server_cert = dev_pki.issue(
        ca, cn="lab.hopital-demo.mssante.fr", ou="1130781234", org="H", st="S", server=False, key=leaf_key,
    )
    setup.fails(setup.auth.certificate(server_cert.cert, "ip"), "several APP mailboxes")
    assert setup.run(setup.auth.certificate(server_cert.cert, "ip", authzid=second.address)).login == second.address


def test_certificate_for_an_org_mailbox_is_refused(s, ca, leaf_key):
    s.fails(s.auth.certificate(mailbox_cert(ca, leaf_key, CARDIO), "ip"), "names no mailbox that can log in")


def test_certificate_rpps_maps_to_per_mailboxes(s, ca, leaf_key):
    cert = personal_cert(ca, leaf_key, "810001234567")
    assert s.run(s.auth.certificate(cert, "ip")).login == MARTIN_LIBERAL  # the first by address
    chosen = s.run(s.auth.certificate(cert, "ip", authzid=MARTIN))
    assert (chosen.login, chosen.authzid) == (MARTIN, "")
    # The first PER mailbox (claire.martin) is not a delegate of cardiologie: the authzid fails.
    s.fails(s.auth.certificate(cert, "ip", authzid=CARDIO), "not a delegate of")


def test_certificate_email_unknown_falls_back_to_rpps(s, ca, leaf_key):
    cert = personal_cert(ca, leaf_key, "10009876543", email="ines@autre-operateur.mssante.fr")
    assert s.run(s.auth.certificate(cert, "ip")).login == INES


def test_certificate_refusals(s, ca, leaf_key):
    unknown_rpps = personal_cert(ca, leaf_key, "819999999999")
    s.fails(s.auth.certificate(unknown_rpps, "ip"), "names no mailbox")
    no_app_there = dev_pki.issue(
        ca, cn="pharma.hopital-demo.mssante.fr", ou="1130785678", org="H", st="S", server=False, key=leaf_key,
    )
    s.fails(s.auth.certificate(no_app_there.cert, "ip"), "names no mailbox")  # that structure has only an ORG
    server_only = dev_pki.issue(
        ca, cn=MARTIN, ou="1", org="H", st="S", emails=(MARTIN,), client=False, key=leaf_key,
    )
    s.fails(s.auth.certificate(server_only.cert, "ip"), "not for client authentication")
    s.fails(s.auth.certificate(PeerTls(version="TLSv1.3", cipher="x", certificate=None), "ip"), "no client certificate")
    s.fails(s.auth.certificate(unknown_rpps, "ip"), "names no mailbox")
    assert s.slept == []  # five failures: the IP's free allowance
    s.fails(s.auth.certificate(unknown_rpps, "ip"), "names no mailbox")
    assert s.slept == [1.0]


# -- bearer tokens ------------------------------------------------------------------------------------


def token(key, **overrides) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": "psc-subject", "iat": now, "exp": now + 300,
        "SubjectNameID": "810001234567",
    }
    claims.update(overrides)
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "psc1"})


def test_bearer_maps_rpps_to_per_mailbox(s, signing_key):
    principal = s.run(s.auth.bearer(token(signing_key), "ip"))
    assert (principal.login, principal.mechanism) == (MARTIN_LIBERAL, "OAUTHBEARER")
    hinted = s.run(s.auth.bearer(token(signing_key), "ip", user_hint=MARTIN.upper(), mechanism="XOAUTH2"))
    assert (hinted.login, hinted.mechanism, hinted.authzid) == (MARTIN, "XOAUTH2", "")


def test_bearer_hint_names_a_delegated_org(s, signing_key):
    principal = s.run(s.auth.bearer(token(signing_key, SubjectNameID="810009876543"), "ip", user_hint=CARDIO))
    assert (principal.login, principal.authzid) == (INES, CARDIO)


def test_bearer_hint_of_someone_else_is_refused(s, signing_key):
    s.fails(s.auth.bearer(token(signing_key, SubjectNameID="810009876543"), "ip", user_hint=MARTIN), "not a delegate")


def test_bearer_refusals(s, signing_key):
    expired = token(signing_key, iat=int(time.time()) - 1000, exp=int(time.time()) - 500)
    error = s.fails(s.auth.bearer(expired, "ip"), "token refused: token expired")
    assert expired not in error.reason
    s.fails(s.auth.bearer(token(signing_key, SubjectNameID="819999999999"), "ip"), "has no PER mailbox")
    s.fails(s.auth.bearer("garbage", "ip"), "malformed")


def test_bearer_without_token_configuration(credentials, signing_key):
    setup = Setup(credentials, None)
    assert not setup.auth.tokens_enabled
    setup.fails(setup.auth.bearer(token(signing_key), "ip"), "not configured")


def test_bearer_keys_unavailable_is_temporary(credentials, tmp_path, signing_key):
    setup = Setup(credentials, tmp_path / "absent-jwks.json")
    with pytest.raises(TokenKeysUnavailable):
        setup.run(setup.auth.bearer(token(signing_key), "ip"))
    assert setup.slept == []


# -- the store's accounts: disabled, bound certificate, last login -------------------------------------


def test_a_disabled_account_cannot_log_in_by_any_mechanism(s, store, ca, leaf_key, signing_key):
    store.accounts.set_state(MARTIN, AccountState.DISABLED, actor="test", at=store.now())
    s.fails(s.auth.password(MARTIN, "pw-martin", "ip"), "account disabled")
    s.fails(s.auth.certificate(mailbox_cert(ca, leaf_key, MARTIN), "ip"), "account disabled")
    s.fails(s.auth.bearer(token(signing_key), "ip", user_hint=MARTIN), "account disabled")
    store.accounts.set_state(MARTIN, AccountState.ENABLED, actor="test", at=store.now())
    s.clock.now += 3600  # past the lockout the failures above earned
    assert s.run(s.auth.password(MARTIN, "pw-martin", "ip2")).login == MARTIN
    assert s.run(s.auth.certificate(mailbox_cert(ca, leaf_key, MARTIN), "ip2")).login == MARTIN


def test_an_app_account_bound_to_a_certificate_refuses_another(tmp_path, store, jwks, ca, leaf_key):
    credentials = CredentialStore(store.accounts, hasher=FAST)
    bound, other = mailbox_cert(ca, leaf_key, LABO), mailbox_cert(ca, dev_pki.make_key(), LABO)
    store.accounts.add(LABO, "APP", actor="test", at=store.now(), cert_sha256=certificate_fingerprint(bound))
    setup = Setup(credentials, jwks)
    assert setup.run(setup.auth.certificate(bound, "ip")).login == LABO
    setup.fails(setup.auth.certificate(other, "ip"), "not the certificate bound")


def test_a_login_records_the_last_login(s, store):
    assert store.accounts.get(MARTIN).last_login_at is None
    s.run(s.auth.password(MARTIN, "pw-martin", "ip"))
    assert store.accounts.get(MARTIN).last_login_at is not None
