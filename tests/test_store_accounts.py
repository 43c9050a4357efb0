"""Store.accounts on both engines: logins beside mail-only rows, state, hashes, the one-time import, audit."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mssante_operator.store import NewMessage, Store
from mssante_operator.store.accounts import AccountExists, AccountNotFound, AccountState, ImportedAccount

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
DOCTOR, LAB, CARDIO = "dr.martin@h.fr", "labo@h.fr", "cardiologie@h.fr"


@pytest.fixture
def store(store_url: str, tmp_path: Path) -> Iterator[Store]:
    store = Store(store_url, tmp_path / "blobs")
    store.migrate()
    yield store
    store.close()


def test_an_account_is_added_once_listed_and_never_shows_mail_only_mailboxes(store: Store) -> None:
    message = NewMessage(raw=b"Subject: x\r\n\r\nx\r\n", message_id="<x@b.fr>", from_addr="a@b.fr", subject="x",
                         authentication_results="", received_at=T0)
    store.deliver(message, [CARDIO, "Dr.Martin@h.fr"])  # two mail-only rows
    assert store.accounts.ls() == [] and not store.accounts.exist()
    record = store.accounts.add("Dr.Martin@H.fr ", "PER", actor="operator:test", at=T0, password_hash="$argon2id$x")
    assert (record.address, record.kind, record.state, record.methods) == (DOCTOR, "PER", AccountState.ENABLED,
                                                                            ("password",))
    assert store.list_messages(DOCTOR)  # the mail of the row it took over stays
    store.accounts.add(LAB, "APP", actor="operator:test", at=T0, cert_pem="PEM", cert_sha256="ab" * 32)
    assert [(r.address, r.methods) for r in store.accounts.ls()] == [(DOCTOR, ("password",)),
                                                                     (LAB, ("certificate",))]
    assert store.accounts.get(CARDIO) is None and store.accounts.exist()
    with pytest.raises(AccountExists):
        store.accounts.add(DOCTOR, "PER", actor="operator:test", at=T0)


def test_state_password_and_last_login(store: Store) -> None:
    store.accounts.add(DOCTOR, "PER", actor="operator:test", at=T0, password_hash="h1")
    assert store.accounts.disabled([DOCTOR, CARDIO]) == set()
    assert store.accounts.set_state(DOCTOR, AccountState.DISABLED, actor="operator:test", at=T0)
    assert not store.accounts.set_state(DOCTOR, AccountState.DISABLED, actor="operator:test", at=T0)
    assert store.accounts.disabled(["DR.MARTIN@h.fr", CARDIO]) == {DOCTOR}
    assert not store.accounts.get(DOCTOR).enabled
    store.accounts.set_password_hash(DOCTOR, "h2", actor="operator:test", at=T0 + timedelta(minutes=1))
    assert store.accounts.get(DOCTOR).password_hash == "h2"
    assert not store.accounts.replace_password_hash(DOCTOR, "h1", "h3")  # changed meanwhile: kept
    assert store.accounts.replace_password_hash(DOCTOR, "h2", "h3")
    store.accounts.record_login(DOCTOR, T0 + timedelta(minutes=2))
    assert store.accounts.get(DOCTOR).last_login_at == T0 + timedelta(minutes=2)
    with pytest.raises(AccountNotFound):
        store.accounts.set_state(CARDIO, AccountState.DISABLED, actor="operator:test", at=T0)
    with pytest.raises(AccountNotFound):
        store.accounts.set_password_hash(CARDIO, "h", actor="operator:test", at=T0)


def test_the_import_happens_once(store: Store) -> None:
    entries = [ImportedAccount(DOCTOR, "PER", "h-doctor"), ImportedAccount(CARDIO, "ORG", "h-cardio")]
    assert store.accounts.import_once(entries, source="credentials.json", at=T0) == 2
    assert [(r.address, r.kind, r.password_hash) for r in store.accounts.ls()] == [
        (CARDIO, "ORG", "h-cardio"), (DOCTOR, "PER", "h-doctor")]
    assert store.accounts.import_once([ImportedAccount(DOCTOR, "PER", "other")], source="x", at=T0) is None
    assert store.accounts.get(DOCTOR).password_hash == "h-doctor"


def test_every_change_is_audited_without_secrets(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="mssante_operator.audit"):
        store.accounts.import_once([ImportedAccount(CARDIO, "ORG", "$argon2id$secret")], source="credentials.json",
                                   at=T0)
        store.accounts.add(DOCTOR, "PER", actor="operator:alice", at=T0, password_hash="$argon2id$secret")
        store.accounts.set_password_hash(DOCTOR, "$argon2id$secret2", actor="operator:alice", at=T0)
        store.accounts.set_state(DOCTOR, AccountState.DISABLED, actor="operator:bob", at=T0)
        store.accounts.set_state(DOCTOR, AccountState.ENABLED, actor="operator:bob", at=T0)
    lines = [r.getMessage() for r in caplog.records if r.name == "mssante_operator.audit"]
    assert lines == [
        f"account import address={CARDIO} kind=ORG methods=password source=credentials.json",
        f"account add address={DOCTOR} kind=PER methods=password actor=operator:alice",
        f"account passwd address={DOCTOR} actor=operator:alice",
        f"account disable address={DOCTOR} actor=operator:bob",
        f"account enable address={DOCTOR} actor=operator:bob",
    ]
    assert "argon2" not in caplog.text
