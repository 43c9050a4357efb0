"""``mssante-operator account add|passwd|disable|enable|ls``: who may log in over IMAP and submission.

Accounts live in the store (every node of one database sees the same); each change is audited.
A PER or ORG mailbox of the annuaire gets a password; an APP mailbox gets its certificate instead
(a certificate login to it then needs that exact certificate).
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from mssante_base.annuaire import BalKind
from mssante_base.cli import HOME_OPTION

from .cli_common import annuaire_call, settings_of, with_store

if TYPE_CHECKING:
    from .store.accounts import AccountRecord
    from .store.facade import Store

BY_OPTION = click.option("--by", "name", help="Who makes the change, for the audit trail (default: your user name).")
PASSWORD_STDIN = click.option("--password-stdin", is_flag=True,
                              help="Read the password from standard input (its first line).")


@click.group()
def account() -> None:
    """Accounts that log in over IMAP and submission: add, change a password, disable, enable, list."""


def _actor(name: str | None) -> str:
    return f"operator:{name or getpass.getuser()}"


def _stop(message: str) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(1)


def _password(from_stdin: bool) -> str:
    """The new password: stdin's first line, else asked twice without echo."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        _stop("the password must not be empty")
    return password


def _hash(password: str) -> str:
    from mssante_base.passwords import password_hasher

    return password_hasher().hash(password)


@account.command("add")
@click.argument("address")
@PASSWORD_STDIN
@click.option("--cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="An APP mailbox's certificate (PEM): the only one it may then log in with.")
@BY_OPTION
@HOME_OPTION
def account_add(address: str, password_stdin: bool, cert: Path | None, name: str | None, home: Path) -> None:
    """Give ADDRESS (a PER or ORG mailbox of the annuaire: a password; an APP mailbox: --cert) a login."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from mssante_base.trust.tls import certificate_fingerprint

    from .store.accounts import AccountExists

    address = address.strip().lower()
    entry = annuaire_call(settings_of(home), lambda directory: directory.lookup(address))
    if entry is None:
        _stop(f"{address} is not a mailbox of the annuaire")
    cert_pem = fingerprint = password_hash = None
    if entry.kind is BalKind.APP:
        if cert is None:
            _stop(f"{address} is an APP mailbox: give its certificate with --cert PEM (not a password)")
        if password_stdin:
            _stop(f"{address} is an APP mailbox: it logs in with its certificate, not a password")
        try:
            certificate = x509.load_pem_x509_certificate(cert.read_bytes())
        except ValueError:
            _stop(f"{cert} is not a PEM certificate")
        cert_pem = certificate.public_bytes(Encoding.PEM).decode("ascii")
        fingerprint = certificate_fingerprint(certificate)
    elif entry.kind in (BalKind.PER, BalKind.ORG):
        if cert is not None:
            _stop(f"{address} is a {entry.kind.value} mailbox: --cert is for APP mailboxes; it takes a password")
        password_hash = _hash(_password(password_stdin))
    else:
        _stop(f"{address} is a {entry.kind.value} mailbox: only PER, ORG and APP mailboxes have accounts")

    def add(store: Store) -> AccountRecord:
        return store.accounts.add(address, entry.kind.value, actor=_actor(name), at=store.now(),
                                  password_hash=password_hash, cert_pem=cert_pem, cert_sha256=fingerprint)

    try:
        record = with_store(home, add)
    except AccountExists as exc:
        _stop(f"{exc} (account passwd changes its password)")
    click.echo(json.dumps(_record_json(record), ensure_ascii=False))


@account.command("passwd")
@click.argument("address")
@PASSWORD_STDIN
@BY_OPTION
@HOME_OPTION
def account_passwd(address: str, password_stdin: bool, name: str | None, home: Path) -> None:
    """Change the password of ADDRESS's account (its open sessions stay; a changed password is never cached)."""
    from .store.accounts import AccountNotFound

    record = with_store(home, lambda store: store.accounts.get(address))
    if record is None:
        _stop(f"{address.strip().lower()} has no account (account add creates it)")
    if record.kind == BalKind.APP.value:
        _stop(f"{record.address} is an APP mailbox: it logs in with its certificate, not a password")
    password_hash = _hash(_password(password_stdin))
    try:
        with_store(home, lambda store: store.accounts.set_password_hash(address, password_hash, actor=_actor(name),
                                                                        at=store.now()))
    except AccountNotFound as exc:
        _stop(str(exc))
    click.echo(f"password of {record.address} changed")


def _set_state(address: str, enabled: bool, name: str | None, home: Path) -> None:
    from .store.accounts import AccountNotFound, AccountState

    state = AccountState.ENABLED if enabled else AccountState.DISABLED
    try:
        changed = with_store(home, lambda store: store.accounts.set_state(address, state, actor=_actor(name),
                                                                         at=store.now()))
    except AccountNotFound as exc:
        _stop(f"{exc} (account add creates it)")
    address = address.strip().lower()
    click.echo(f"{address} {state.value}" if changed else f"{address} was already {state.value}")


@account.command("disable")
@click.argument("address")
@BY_OPTION
@HOME_OPTION
def account_disable(address: str, name: str | None, home: Path) -> None:
    """ADDRESS can no longer log in (any mechanism); its open IMAP sessions are closed within seconds."""
    _set_state(address, False, name, home)


@account.command("enable")
@click.argument("address")
@BY_OPTION
@HOME_OPTION
def account_enable(address: str, name: str | None, home: Path) -> None:
    """ADDRESS may log in again."""
    _set_state(address, True, name, home)


@account.command("ls")
@HOME_OPTION
def account_ls(home: Path) -> None:
    """Every account, one JSON object per line: address, kind, state, methods, last_login (never a hash)."""
    for record in with_store(home, lambda store: store.accounts.ls()):
        click.echo(json.dumps(_record_json(record), ensure_ascii=False))


def _record_json(record: AccountRecord) -> dict[str, object]:
    return {
        "address": record.address, "kind": record.kind, "state": record.state.value, "methods": list(record.methods),
        "last_login": None if record.last_login_at is None else record.last_login_at.isoformat(),
    }
