"""Accounts that log in (Store.accounts): kind, state, password hash, an APP mailbox's bound certificate.

They live in the store so that every node of one PostgreSQL sees the same accounts. A row of the
``accounts`` table with ``kind`` NULL is a mailbox that only receives mail (created by its first
delivery); ``add`` gives it a login, and no command removes one (``disable`` does what an operator needs,
and keeps the mail). Every change is written to the operator's audit log; hashes and certificates never are.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError

from mssante_base.errors import TemporaryFailure

from .database import Database
from .models import Account
from .write_unit import normalize_address

audit = logging.getLogger("mssante_operator.audit")
log = logging.getLogger(__name__)

A = Account


class AccountState(enum.StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"


class AccountsUnavailable(TemporaryFailure):
    """The store cannot be reached: logins answer a temporary failure."""


@contextlib.contextmanager
def _available() -> Iterator[None]:
    try:
        yield
    except DBAPIError as exc:  # the statement and its parameters stay out of the message
        raise AccountsUnavailable(f"the accounts cannot be read ({type(exc.orig).__name__})") from exc


class AccountExists(ValueError):
    """That address already has an account."""


class AccountNotFound(LookupError):
    """That address has no account."""


@dataclass(frozen=True)
class AccountRecord:
    """One account as the authenticator and `account ls` see it (the hash only for the authenticator)."""

    address: str
    kind: str  # PER | ORG | APP, as the annuaire said when the account was created
    state: AccountState
    password_hash: str | None
    cert_sha256: str | None
    created_at: datetime
    updated_at: datetime | None
    last_login_at: datetime | None

    @property
    def enabled(self) -> bool:
        return self.state is AccountState.ENABLED

    @property
    def methods(self) -> tuple[str, ...]:
        """How it may log in: ``password``, ``certificate`` (a bound certificate)."""
        return tuple(m for m, present in (("password", self.password_hash), ("certificate", self.cert_sha256))
                     if present)


@dataclass(frozen=True)
class ImportedAccount:
    """One entry of credentials.json, with the kind the annuaire gives its address."""

    address: str
    kind: str
    password_hash: str


class Accounts:
    """Accounts over the store's database; synchronous like the rest of the store."""

    def __init__(self, store: Database) -> None:
        self._store = store

    # -- reading -----------------------------------------------------------------------------

    def get(self, address: str) -> AccountRecord | None:
        """The account of ``address``; None when it has none (a mailbox that only receives mail included)."""
        with _available(), self._store.reading() as conn:
            row = conn.execute(_logins().where(A.address == normalize_address(address))).one_or_none()
        return None if row is None else _record(row)

    def exist(self) -> bool:
        """Whether any account exists (the one-time import of credentials.json is then done)."""
        with self._store.reading() as conn:
            return conn.scalar(select(A.id).where(A.kind.is_not(None)).limit(1)) is not None

    def ls(self) -> list[AccountRecord]:
        """Every account, by address."""
        with self._store.reading() as conn:
            return [_record(row) for row in conn.execute(_logins().order_by(A.address))]

    def disabled(self, addresses: Iterable[str]) -> set[str]:
        """Which of ``addresses`` (lower case) have a disabled account: one query for a process's sessions."""
        wanted = {normalize_address(a) for a in addresses}
        if not wanted:
            return set()
        query = select(A.address).where(A.state == AccountState.DISABLED.value)
        with _available(), self._store.reading() as conn:
            return wanted & set(conn.scalars(query))

    # -- writing -----------------------------------------------------------------------------

    def add(self, address: str, kind: str, *, actor: str, at: datetime, password_hash: str | None = None,
            cert_pem: str | None = None, cert_sha256: str | None = None) -> AccountRecord:
        """Give ``address`` a login (its mail, if any, stays). Raises AccountExists."""
        address = normalize_address(address)
        with self._store.writing() as conn:
            self._store.account_id(conn, address, create=True)
            changed = conn.execute(
                update(A).where(A.address == address, A.kind.is_(None))
                .values(kind=kind, state=AccountState.ENABLED.value, password_hash=password_hash, cert_pem=cert_pem,
                        cert_sha256=cert_sha256, updated_at=at)).rowcount
            if not changed:
                raise AccountExists(f"{address} already has an account")
            row = conn.execute(_logins().where(A.address == address)).one()
        record = _record(row)
        audit.info("account add address=%s kind=%s methods=%s actor=%s", address, kind,
                   ",".join(record.methods) or "-", actor)
        return record

    def set_password_hash(self, address: str, password_hash: str, *, actor: str, at: datetime) -> None:
        """Replace the password of ``address``. Raises AccountNotFound."""
        self._change(address, {"password_hash": password_hash}, at)
        audit.info("account passwd address=%s actor=%s", normalize_address(address), actor)

    def set_state(self, address: str, state: AccountState, *, actor: str, at: datetime) -> bool:
        """Enable or disable ``address``; False when it already was. Raises AccountNotFound."""
        address = normalize_address(address)
        with self._store.writing() as conn:
            current = conn.scalar(select(A.state).where(A.address == address, A.kind.is_not(None)))
            if current is None:
                raise AccountNotFound(f"{address} has no account")
            if current == state.value:
                return False
            conn.execute(update(A).where(A.address == address).values(state=state.value, updated_at=at))
        audit.info("account %s address=%s actor=%s", "enable" if state is AccountState.ENABLED else "disable",
                   address, actor)
        return True

    def replace_password_hash(self, address: str, old: str, new: str) -> bool:
        """``new`` in place of ``old`` only if ``old`` is still the hash (a rehash never undoes a passwd)."""
        with _available(), self._store.writing() as conn:
            return bool(conn.execute(
                update(A).where(A.address == normalize_address(address), A.password_hash == old)
                .values(password_hash=new)).rowcount)

    def record_login(self, address: str, at: datetime) -> None:
        """Note a successful login (callers throttle: this is a write; not fsync'd: see lazy_commit)."""
        with _available(), self._store.writing(durable=False) as conn:
            conn.execute(update(A).where(A.address == normalize_address(address), A.kind.is_not(None))
                         .values(last_login_at=at))

    def import_once(self, entries: Iterable[ImportedAccount], *, source: str, at: datetime) -> int | None:
        """Create these accounts, only while there is none at all (the first start); None when there were."""
        entries = list(entries)
        with self._store.writing() as conn:
            if conn.scalar(select(func.count()).select_from(A).where(A.kind.is_not(None))):
                return None
            for entry in entries:
                address = normalize_address(entry.address)
                self._store.account_id(conn, address, create=True)
                conn.execute(update(A).where(A.address == address).values(
                    kind=entry.kind, state=AccountState.ENABLED.value, password_hash=entry.password_hash,
                    updated_at=at))
        for entry in entries:
            audit.info("account import address=%s kind=%s methods=password source=%s", normalize_address(entry.address),
                       entry.kind, source)
        return len(entries)

    def _change(self, address: str, values: dict[str, Any], at: datetime) -> None:
        address = normalize_address(address)
        with self._store.writing() as conn:
            changed = conn.execute(update(A).where(A.address == address, A.kind.is_not(None))
                                   .values(**values, updated_at=at)).rowcount
        if not changed:
            raise AccountNotFound(f"{address} has no account")


def _logins() -> Any:
    return select(A.address, A.kind, A.state, A.password_hash, A.cert_sha256, A.created_at, A.updated_at,
                  A.last_login_at).where(A.kind.is_not(None))


def _record(row: Any) -> AccountRecord:
    return AccountRecord(
        address=row.address, kind=row.kind, state=AccountState(row.state), password_hash=row.password_hash,
        cert_sha256=row.cert_sha256, created_at=row.created_at, updated_at=row.updated_at,
        last_login_at=row.last_login_at,
    )  # fmt: skip
