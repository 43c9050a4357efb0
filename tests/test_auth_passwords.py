"""CredentialStore: the demo kit's credentials.json, argon2id, reloads, atomic writes, failing closed."""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from mssante_operator.auth.passwords import CredentialStore, CredentialsUnavailable
from mssante_operator.demo_kit import CREDENTIALS_FILE
from mssante_operator.trust_space import dev_pki

FAST = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
STRONGER = PasswordHasher(time_cost=2, memory_cost=128, parallelism=1)


def write_credentials(path: Path, passwords: dict[str, str], hasher: PasswordHasher = FAST) -> None:
    """Write the file the way demo_kit._write_mailboxes does (JSON object, mode 0600)."""
    data = {address: hasher.hash(password) for address, password in passwords.items()}
    dev_pki.write_secret(path, (json.dumps(data, ensure_ascii=False, indent=2) + "\n").encode())


def touch_later(path: Path) -> None:
    """Make sure the next stat differs even on file systems with coarse timestamps."""
    later = time.time() + 5
    os.utime(path, (later, later))


def test_demo_kit_format_with_default_hasher(tmp_path):
    # demo_kit hashes with PasswordHasher() defaults: the store must verify those hashes as they are.
    path = tmp_path / CREDENTIALS_FILE
    write_credentials(path, {"dr.martin@h.fr": "pw-martin", "labo-auto@h.fr": "pw-labo"}, PasswordHasher())
    store = CredentialStore(path)
    assert store.verify("dr.martin@h.fr", "pw-martin")
    assert store.verify("  DR.Martin@H.fr ", "pw-martin")
    assert not store.verify("dr.martin@h.fr", "pw-labo")
    assert not store.verify("nobody@h.fr", "pw-martin")
    assert store.addresses() == ["dr.martin@h.fr", "labo-auto@h.fr"]
    assert store.has_password("LABO-AUTO@h.fr")


class RecordingHasher(PasswordHasher):
    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=64, parallelism=1)
        self.calls: list[str] = []

    def verify(self, hash_, password):
        self.calls.append(hash_)
        return super().verify(hash_, password)


def test_unknown_user_is_verified_against_a_dummy_hash(tmp_path):
    path = tmp_path / "credentials.json"
    write_credentials(path, {"a@h.fr": "pw"})
    hasher = RecordingHasher()
    store = CredentialStore(path, hasher=hasher)
    calls = hasher.calls
    assert not store.verify("ghost@h.fr", "pw")
    assert not store.verify("a@h.fr", "wrong")
    assert len(calls) == 2  # one argon2 verification each: same work, same time
    assert calls[0] != calls[1]


def test_missing_file_means_no_passwords(tmp_path):
    store = CredentialStore(tmp_path / "credentials.json", hasher=FAST)
    assert not store.verify("a@h.fr", "pw")
    assert store.addresses() == []


def test_reload_when_file_changes(tmp_path):
    path = tmp_path / "credentials.json"
    write_credentials(path, {"a@h.fr": "old"})
    store = CredentialStore(path, hasher=FAST)
    assert store.verify("a@h.fr", "old")
    write_credentials(path, {"a@h.fr": "new", "b@h.fr": "b"})
    touch_later(path)
    assert store.verify("a@h.fr", "new")
    assert not store.verify("a@h.fr", "old")
    assert store.verify("b@h.fr", "b")
    path.unlink()
    assert not store.verify("a@h.fr", "new")


def test_unparsable_file_fails_closed(tmp_path, caplog):
    path = tmp_path / "credentials.json"
    write_credentials(path, {"a@h.fr": "pw"})
    store = CredentialStore(path, hasher=FAST)
    assert store.verify("a@h.fr", "pw")
    path.write_text('{"a@h.fr": ', encoding="utf-8")
    touch_later(path)
    with caplog.at_level(logging.ERROR), pytest.raises(CredentialsUnavailable):
        store.verify("a@h.fr", "pw")
    assert "pw" not in caplog.text.replace(str(path), "")
    with pytest.raises(CredentialsUnavailable):  # still failing, without re-reading
        store.verify("a@h.fr", "pw")
    path.write_text('["not", "a", "mapping"]', encoding="utf-8")
    touch_later(path)
    with pytest.raises(CredentialsUnavailable, match="map addresses"):
        store.verify("a@h.fr", "pw")
    write_credentials(path, {"a@h.fr": "pw"})
    touch_later(path)
    assert store.verify("a@h.fr", "pw")


def test_unusable_hash_is_a_failure_not_a_crash(tmp_path):
    path = tmp_path / "credentials.json"
    dev_pki.write_secret(path, json.dumps({"a@h.fr": "plaintext-oops"}).encode())
    store = CredentialStore(path, hasher=FAST)
    assert not store.verify("a@h.fr", "plaintext-oops")


def test_set_password_is_atomic_private_and_readable_by_the_store(tmp_path):
    path = tmp_path / "home" / "credentials.json"
    store = CredentialStore(path, hasher=FAST)
    store.set_password("Dr.Martin@h.fr", "first")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert store.verify("dr.martin@h.fr", "first")
    store.set_password("b@h.fr", "second")
    store.set_password("dr.martin@h.fr", "third")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert sorted(data) == ["b@h.fr", "dr.martin@h.fr"]
    assert data["dr.martin@h.fr"].startswith("$argon2id$")
    assert "third" not in path.read_text(encoding="utf-8")
    assert not store.verify("dr.martin@h.fr", "first")
    assert store.verify("dr.martin@h.fr", "third")
    # A second store (another worker process) sees the change.
    assert CredentialStore(path, hasher=FAST).verify("b@h.fr", "second")
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    with pytest.raises(ValueError):
        store.set_password("b@h.fr", "")
    assert store.remove("b@h.fr")
    assert not store.remove("b@h.fr")
    assert not store.verify("b@h.fr", "second")


def test_set_password_keeps_entries_written_by_others(tmp_path):
    path = tmp_path / "credentials.json"
    write_credentials(path, {"a@h.fr": "a"})
    store = CredentialStore(path, hasher=FAST)
    assert store.verify("a@h.fr", "a")
    write_credentials(path, {"a@h.fr": "a", "kit@h.fr": "k"})  # written behind the store's back
    store.set_password("new@h.fr", "n")
    assert store.addresses() == ["a@h.fr", "kit@h.fr", "new@h.fr"]


def test_weak_hash_is_upgraded_on_successful_login(tmp_path):
    path = tmp_path / "credentials.json"
    write_credentials(path, {"a@h.fr": "pw", "b@h.fr": "other"}, FAST)
    before = json.loads(path.read_text(encoding="utf-8"))
    store = CredentialStore(path, hasher=STRONGER)
    assert not store.verify("a@h.fr", "wrong")
    assert json.loads(path.read_text(encoding="utf-8")) == before  # nothing rewritten on failure
    assert store.verify("a@h.fr", "pw")
    after = json.loads(path.read_text(encoding="utf-8"))
    assert after["a@h.fr"] != before["a@h.fr"]
    assert not STRONGER.check_needs_rehash(after["a@h.fr"])
    assert after["b@h.fr"] == before["b@h.fr"]
    assert store.verify("a@h.fr", "pw")
    assert CredentialStore(path, hasher=FAST, rehash=False).verify("a@h.fr", "pw")


def test_no_upgrade_when_disabled(tmp_path):
    path = tmp_path / "credentials.json"
    write_credentials(path, {"a@h.fr": "pw"}, FAST)
    before = path.read_bytes()
    assert CredentialStore(path, hasher=STRONGER, rehash=False).verify("a@h.fr", "pw")
    assert path.read_bytes() == before


def test_passwords_never_logged(tmp_path, caplog):
    path = tmp_path / "credentials.json"
    write_credentials(path, {"a@h.fr": "Sup3r-Secret"}, FAST)
    with caplog.at_level(logging.DEBUG):
        store = CredentialStore(path, hasher=STRONGER)
        store.verify("a@h.fr", "Sup3r-Secret")
        store.verify("a@h.fr", "Wr0ng-Secret")
        store.set_password("a@h.fr", "N3w-Secret")
    assert "Secret" not in caplog.text


def test_world_readable_file_is_reported(tmp_path, caplog):
    path = tmp_path / "credentials.json"
    write_credentials(path, {"a@h.fr": "pw"})
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        CredentialStore(path, hasher=FAST).verify("a@h.fr", "pw")
    assert "readable by other users" in caplog.text
