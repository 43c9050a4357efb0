"""Accounts end to end: the `account` commands on a running operator's store, real IMAP and submission logins,
the one-time import of credentials.json, disabled accounts' sessions closed, an APP mailbox's bound certificate."""

from __future__ import annotations

import imaplib
import json
import logging
import smtplib
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from support.harness import (
    OPERATOR_DOMAIN,
    RunningOperator,
    make_kit,
    running_operator,
    serve_process,
    wait_for_log,
)

from mssante_base.passwords import password_hasher
from mssante_operator.app import prepare_store
from mssante_operator.cli import main
from mssante_operator.config import load_settings
from mssante_operator.trust_space import dev_pki

D = OPERATOR_DOMAIN
DOCTOR, INES, PAUL = f"dr.martin@{D}", f"ines.secretaire@{D}", f"paul.durand@{D}"
CARDIO, PHARMACY, LAB = f"cardiologie@{D}", f"pharmacie.centrale@{D}", f"labo-auto@{D}"
NOT_IMPORTED = (PAUL, PHARMACY, LAB)  # left out of credentials.json before the first start: `account add` them


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningOperator]:
    home = tmp_path_factory.mktemp("kit") / "home"
    manifest = make_kit(home)
    credentials = json.loads((home / "credentials.json").read_text(encoding="utf-8"))
    (home / "credentials.json").write_text(json.dumps({a: h for a, h in credentials.items() if a not in NOT_IMPORTED}),
                                           encoding="utf-8")
    with running_operator(home, manifest) as operator:  # its first start imports credentials.json
        yield operator


def account(running: RunningOperator, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, ["account", *args, "--home", str(running.home)], input=stdin)


def listed(running: RunningOperator) -> dict[str, dict[str, Any]]:
    result = account(running, "ls")
    assert result.exit_code == 0, result.output
    return {o["address"]: o for o in map(json.loads, result.stdout.splitlines())}


def password(running: RunningOperator, address: str) -> str:
    return running.mailbox(address)["password"]


def imap(running: RunningOperator, context: ssl.SSLContext | None = None) -> imaplib.IMAP4_SSL:
    return imaplib.IMAP4_SSL("127.0.0.1", running.port("imaps"), ssl_context=context or running.tls_context(),
                             timeout=30)


def imap_login(running: RunningOperator, address: str, secret: str) -> None:
    """A full IMAP login and logout; raises imaplib.IMAP4.error when refused."""
    client = imap(running)
    try:
        client.login(address, secret)
    finally:
        client.logout()


def submission_login(running: RunningOperator, address: str, secret: str) -> None:
    with smtplib.SMTP("127.0.0.1", running.port("submission"), timeout=30) as client:
        client.starttls(context=running.tls_context())
        client.login(address, secret)


def test_credentials_json_is_imported_at_the_first_start_only(running: RunningOperator) -> None:
    accounts = listed(running)
    assert set(accounts) == {m["address"] for m in running.manifest["mailboxes"]} - set(NOT_IMPORTED)
    assert {k: accounts[DOCTOR][k] for k in ("kind", "state", "methods")} == {
        "kind": "PER", "state": "enabled", "methods": ["password"]}
    assert accounts[CARDIO]["kind"] == "ORG"
    # Written again (another password for the doctor): a later start does not read it.
    (running.home / "credentials.json").write_text(json.dumps({DOCTOR: password_hasher().hash("changed")}),
                                                   encoding="utf-8")
    prepare_store(load_settings(running.home))
    imap_login(running, DOCTOR, password(running, DOCTOR))
    with pytest.raises(imaplib.IMAP4.error):
        imap_login(running, DOCTOR, "changed")


def test_add_checks_the_annuaire(running: RunningOperator, tmp_path: Path) -> None:
    result = account(running, "add", f"nobody@{D}", "--password-stdin", stdin="pw\n")
    assert result.exit_code == 1 and f"nobody@{D} is not a mailbox of the annuaire" in result.stderr
    result = account(running, "add", LAB, "--password-stdin", stdin="pw\n")
    assert result.exit_code == 1 and "APP mailbox: give its certificate with --cert PEM" in result.stderr
    result = account(running, "add", DOCTOR, "--password-stdin", stdin="pw\n")
    assert result.exit_code == 1 and f"{DOCTOR} already has an account" in result.stderr
    cert = running.home / running.mailbox(PAUL)["cert"]
    result = account(running, "add", PAUL, "--cert", str(cert))
    assert result.exit_code == 1 and "--cert is for APP mailboxes" in result.stderr
    assert PAUL not in listed(running) and LAB not in listed(running)


def test_add_passwd_disable_enable_over_imap_and_submission(running: RunningOperator,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="mssante_operator.audit"):
        result = account(running, "add", PAUL.upper(), "--password-stdin", "--by", "alice", stdin="Premier-mdp-1\n")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == {"address": PAUL, "kind": "PER", "state": "enabled",
                                             "methods": ["password"], "last_login": None}
        imap_login(running, PAUL, "Premier-mdp-1")
        submission_login(running, PAUL, "Premier-mdp-1")
        assert listed(running)[PAUL]["last_login"] is not None

        result = account(running, "passwd", PAUL, "--password-stdin", "--by", "alice", stdin="Second-mdp-2\n")
        assert result.exit_code == 0, result.output
        with pytest.raises(imaplib.IMAP4.error):
            imap_login(running, PAUL, "Premier-mdp-1")
        imap_login(running, PAUL, "Second-mdp-2")

        result = account(running, "disable", PAUL, "--by", "bob")
        assert result.exit_code == 0 and f"{PAUL} disabled" in result.stdout
        assert listed(running)[PAUL]["state"] == "disabled"
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            imap_login(running, PAUL, "Second-mdp-2")
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            submission_login(running, PAUL, "Second-mdp-2")
        assert refused.value.smtp_code == 535

        result = account(running, "enable", PAUL, "--by", "bob")
        assert result.exit_code == 0 and f"{PAUL} enabled" in result.stdout
        submission_login(running, PAUL, "Second-mdp-2")
    audit = [r.getMessage() for r in caplog.records if r.name == "mssante_operator.audit"
             and r.getMessage().startswith("account ")]
    assert audit == [
        f"account add address={PAUL} kind=PER methods=password actor=operator:alice",
        f"account passwd address={PAUL} actor=operator:alice",
        f"account disable address={PAUL} actor=operator:bob",
        f"account enable address={PAUL} actor=operator:bob",
    ]
    assert "mdp" not in caplog.text and "argon2" not in caplog.text
    assert all("hash" not in line for line in account(running, "ls").stdout.splitlines())


def test_add_prompts_twice_without_echo(running: RunningOperator) -> None:
    result = account(running, "add", PHARMACY, stdin="Pharma-mdp-3\nPharma-mdp-3\n")
    assert result.exit_code == 0, result.output
    assert "Pharma-mdp-3" not in result.output
    assert listed(running)[PHARMACY]["kind"] == "ORG"


class RawImap:
    """An IMAP session over a plain TLS socket, to read what the server sends unasked (BYE)."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock = context.wrap_socket(raw)
        self.lines = self.sock.makefile("rb")
        assert self.line().startswith("* OK")

    def line(self) -> str:
        return self.lines.readline().decode("utf-8", "replace").rstrip("\r\n")

    def command(self, text: str) -> list[str]:
        self.sock.sendall(f"{text}\r\n".encode())
        tag = text.split()[0]
        lines = [self.line()]
        while lines[-1] and not lines[-1].startswith(f"{tag} ") and not lines[-1].startswith("+ "):
            lines.append(self.line())
        return lines

    def until_closed(self) -> list[str]:
        lines = []
        while line := self.line():
            lines.append(line)
        return lines

    def close(self) -> None:
        self.sock.close()


def test_disabling_closes_the_accounts_open_imap_sessions(running: RunningOperator) -> None:
    sessions = [RawImap(running.port("imaps"), running.tls_context()) for _ in range(3)]
    try:
        idling, waiting, other = sessions
        for session, address in ((idling, INES), (waiting, INES), (other, DOCTOR)):
            assert session.command(f'a LOGIN "{address}" "{password(running, address)}"')[-1].startswith("a OK")
            assert session.command("b SELECT INBOX")[-1].startswith("b OK")
        assert idling.command("c IDLE")[-1].startswith("+ ")
        assert account(running, "disable", INES).exit_code == 0
        assert "* BYE account disabled" in idling.until_closed()  # then the server closed it
        assert "* BYE account disabled" in waiting.until_closed()
        assert other.command("d NOOP")[-1].startswith("d OK")  # another account's session stays
    finally:
        for session in sessions:
            session.close()
        account(running, "enable", INES)


def test_a_worker_process_closes_the_sessions_of_an_account_disabled_elsewhere(tmp_path: Path,
                                                                             store_url: str) -> None:
    """Two workers (on SQLite and on PostgreSQL, as nodes share it); the command runs in another process."""
    home = tmp_path / "home"
    manifest = make_kit(home, store_url=store_url, server={"workers": 2})
    secret = next(m["password"] for m in manifest["mailboxes"] if m["address"] == INES)
    context = ssl.create_default_context(cafile=str(home / manifest["trust_ca"]))
    context.check_hostname = False
    port = int(manifest["listeners"]["imaps"]["port"])
    with serve_process(home, manifest):
        wait_for_log(home / "serve.log", f"operator {OPERATOR_DOMAIN} ready", count=2)
        sessions = [RawImap(port, context) for _ in range(4)]
        try:
            for n, session in enumerate(sessions):
                assert session.command(f'a LOGIN "{INES}" "{secret}"')[-1].startswith("a OK")
                assert session.command("b SELECT INBOX")[-1].startswith("b OK")
                if n % 2:
                    assert session.command("c IDLE")[-1].startswith("+ ")
            result = CliRunner().invoke(main, ["account", "disable", INES, "--home", str(home)])
            assert result.exit_code == 0, result.output
            for session in sessions:
                assert "* BYE account disabled" in session.until_closed()
            late = RawImap(port, context)
            assert late.command(f'a LOGIN "{INES}" "{secret}"')[-1].startswith("a NO [AUTHENTICATIONFAILED]")
            late.close()
        finally:
            for session in sessions:
                session.close()


def issue_lab_certificate(running: RunningOperator, folder: Path) -> tuple[Path, Path]:
    """Another valid client certificate for the APP mailbox, from the kit's CA."""
    home = running.home
    ca = dev_pki.Authority(cert=x509.load_pem_x509_certificate((home / running.manifest["trust_ca"]).read_bytes()),
                           key=serialization.load_pem_private_key((home / "certs/trust-ca.key").read_bytes(), None))
    issued = dev_pki.issue(ca, cn=LAB, ou="1130781234", org="HOPITAL DEMO", st="Ile-de-France", emails=(LAB,),
                           server=False, client=True)
    cert, key = folder / "lab-other.pem", folder / "lab-other.key"
    cert.write_bytes(issued.cert.public_bytes(serialization.Encoding.PEM))
    dev_pki.write_key(key, issued.key)
    return cert, key


def external_login(running: RunningOperator, cert: Path, key: Path) -> None:
    context = running.tls_context()
    context.load_cert_chain(cert, key)
    client = imap(running, context)
    try:
        client.authenticate("EXTERNAL", lambda _: b"")
    finally:
        client.logout()


def test_an_app_mailbox_is_bound_to_its_certificate(running: RunningOperator, tmp_path: Path) -> None:
    lab = running.mailbox(LAB)
    kit_cert, kit_key = running.home / lab["cert"], running.home / lab["key"]
    other_cert, other_key = issue_lab_certificate(running, tmp_path)
    external_login(running, other_cert, other_key)  # no account yet: any certificate naming it, as before
    result = account(running, "add", LAB, "--cert", str(kit_cert))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["methods"] == ["certificate"]
    external_login(running, kit_cert, kit_key)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        external_login(running, other_cert, other_key)
    result = account(running, "passwd", LAB, "--password-stdin", stdin="pw\n")
    assert result.exit_code == 1 and "logs in with its certificate" in result.stderr


def test_unknown_accounts_are_reported(running: RunningOperator) -> None:
    for command in ("disable", "enable"):
        result = account(running, command, f"nobody@{D}")
        assert result.exit_code == 1 and f"nobody@{D} has no account" in result.stderr
    result = account(running, "passwd", f"nobody@{D}", "--password-stdin", stdin="pw\n")
    assert result.exit_code == 1 and "has no account" in result.stderr
