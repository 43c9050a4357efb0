"""CredentialStore: the demo kit's credentials.json, argon2id, reloads, atomic writes, failing closed."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from argon2 import PasswordHasher, extract_parameters
from argon2.profiles import RFC_9106_LOW_MEMORY
from pydantic import ValidationError

from mssante_base.passwords import password_hasher
from mssante_operator.auth.passwords import (
    CACHE_TTL,
    VERIFY_THREADS,
    CredentialStore,
    CredentialsUnavailable,
    verification_executor,
)
from mssante_operator.config import AuthSettings
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


def test_demo_kit_format_with_the_product_hasher(tmp_path):
    path = tmp_path / CREDENTIALS_FILE
    write_credentials(path, {"dr.martin@h.fr": "pw-martin", "labo-auto@h.fr": "pw-labo"}, password_hasher())
    before = path.read_bytes()
    store = CredentialStore(path)
    assert store.verify("dr.martin@h.fr", "pw-martin")
    assert store.verify("  DR.Martin@H.fr ", "pw-martin")
    assert not store.verify("dr.martin@h.fr", "pw-labo")
    assert not store.verify("nobody@h.fr", "pw-martin")
    assert store.addresses() == ["dr.martin@h.fr", "labo-auto@h.fr"]
    assert store.has_password("LABO-AUTO@h.fr")
    assert path.read_bytes() == before  # current parameters: nothing to rewrite


def test_new_hashes_use_the_owasp_parameters(tmp_path):
    params = extract_parameters(password_hasher().hash("pw"))
    assert (params.type.name, params.memory_cost, params.time_cost, params.parallelism) == ("ID", 19456, 2, 1)
    path = tmp_path / CREDENTIALS_FILE
    CredentialStore(path).set_password("a@h.fr", "pw")
    stored = json.loads(path.read_text(encoding="utf-8"))["a@h.fr"]
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


def test_hashes_of_older_kits_still_verify(tmp_path):
    # Kits written before: argon2-cffi's defaults (64 MiB, t=3, p=4). They verify with their own
    # parameters, and a successful login rewrites them with the current ones.
    path = tmp_path / CREDENTIALS_FILE
    write_credentials(path, {"dr.martin@h.fr": "pw-martin", "labo-auto@h.fr": "pw-labo"}, PasswordHasher())
    assert extract_parameters(json.loads(path.read_text())["dr.martin@h.fr"]) == RFC_9106_LOW_MEMORY
    store = CredentialStore(path)
    assert store.verify("dr.martin@h.fr", "pw-martin")
    assert store.verify("  DR.Martin@H.fr ", "pw-martin")
    assert not store.verify("dr.martin@h.fr", "pw-labo")
    assert not store.verify("nobody@h.fr", "pw-martin")
    assert store.addresses() == ["dr.martin@h.fr", "labo-auto@h.fr"]
    assert store.has_password("LABO-AUTO@h.fr")
    hashes = json.loads(path.read_text(encoding="utf-8"))
    assert hashes["dr.martin@h.fr"].startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert extract_parameters(hashes["labo-auto@h.fr"]) == RFC_9106_LOW_MEMORY  # not logged in yet


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


# -- verified-login cache ------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cached_store(path: Path, **kwargs) -> tuple[CredentialStore, RecordingHasher]:
    hasher = RecordingHasher()
    store = CredentialStore(path, hasher=hasher, **kwargs)
    hasher.calls.clear()  # the dummy hash is made, not verified
    return store, hasher


def test_cache_hit_skips_argon2(tmp_path):
    path = tmp_path / "credentials.json"
    write_credentials(path, {"a@h.fr": "pw-a", "b@h.fr": "pw-b"})
    store, hasher = cached_store(path)
    assert store.verify("a@h.fr", "pw-a")
    assert len(hasher.calls) == 1
    assert store.verify("a@h.fr", "pw-a")
    assert store.verify(" A@H.fr", "pw-a")  # the same address
    assert len(hasher.calls) == 1
    assert store.verify("b@h.fr", "pw-b")  # another account: its own verification
    assert len(hasher.calls) == 2
    # The cache holds digests, never the password.
    assert all(b"pw-a" not in digest and len(digest) == 32 for _, digest in store._cache)


def test_wrong_passwords_are_never_cached(tmp_path):
    path = tmp_path / "credentials.json"
    write_credentials(path, {"a@h.fr": "pw-a"})
    store, hasher = cached_store(path)
    assert not store.verify("a@h.fr", "wrong")
    assert not store.verify("a@h.fr", "wrong")
    assert len(hasher.calls) == 2
    assert store.verify("a@h.fr", "pw-a")
    assert not store.verify("a@h.fr", "wrong")  # a cached success does not shortcut a failure
    assert not store.verify("a@h.fr", "pw-a ")
    assert not store.verify("ghost@h.fr", "pw-a")  # unknown: still a full (dummy) verification
    assert len(hasher.calls) == 6


def test_cache_entries_expire(tmp_path):
    path = tmp_path / "credentials.json"
    write_credentials(path, {"a@h.fr": "pw-a"})
    clock = Clock()
    store, hasher = cached_store(path, cache_ttl=60, clock=clock)
    assert store.verify("a@h.fr", "pw-a")
    clock.now += 59
    assert store.verify("a@h.fr", "pw-a")
    assert len(hasher.calls) == 1
    clock.now += 2  # 61 s after the verification: expired (a hit does not extend it)
    assert store.verify("a@h.fr", "pw-a")
    assert len(hasher.calls) == 2
    clock.now += 30
    assert store.verify("a@h.fr", "pw-a")
    assert len(hasher.calls) == 2


def test_default_cache_ttl_is_five_minutes(tmp_path):
    path = tmp_path / "credentials.json"
    write_credentials(path, {"a@h.fr": "pw-a"})
    clock = Clock()
    store, hasher = cached_store(path, clock=clock)
    assert CACHE_TTL == 300
    assert store.verify("a@h.fr", "pw-a")
    clock.now += 299
    assert store.verify("a@h.fr", "pw-a")
    clock.now += 2
    assert store.verify("a@h.fr", "pw-a")
    assert len(hasher.calls) == 2


def test_file_change_empties_the_cache_and_a_changed_password_is_refused(tmp_path):
    path = tmp_path / "credentials.json"
    write_credentials(path, {"a@h.fr": "old", "b@h.fr": "pw-b"})
    store, hasher = cached_store(path)
    assert store.verify("a@h.fr", "old") and store.verify("b@h.fr", "pw-b")
    assert len(hasher.calls) == 2
    write_credentials(path, {"a@h.fr": "new", "b@h.fr": "pw-b"})  # another process, or an edit
    touch_later(path)
    assert not store.verify("a@h.fr", "old")
    assert store.verify("a@h.fr", "new")
    assert store.verify("b@h.fr", "pw-b")  # unchanged, but the whole cache was emptied
    assert len(hasher.calls) == 5
    write_credentials(path, {"b@h.fr": "pw-b"})  # a removed
    touch_later(path)
    assert not store.verify("a@h.fr", "new")
    path.unlink()
    assert not store.verify("b@h.fr", "pw-b")


def test_the_stores_own_writes_empty_the_cache(tmp_path):
    path = tmp_path / "credentials.json"
    store, hasher = cached_store(path)
    store.set_password("a@h.fr", "old")
    assert store.verify("a@h.fr", "old")
    store.set_password("a@h.fr", "new")
    assert not store.verify("a@h.fr", "old")
    assert store.verify("a@h.fr", "new") and store.verify("a@h.fr", "new")
    assert len(hasher.calls) == 3  # old, old refused, new; the second "new" is a hit
    store.remove("a@h.fr")
    assert not store.verify("a@h.fr", "new")


def test_a_password_changed_during_its_verification_is_not_cached(tmp_path):
    # The file changes while argon2 runs on the old hash: that success must not outlive the reload.
    path = tmp_path / "credentials.json"
    write_credentials(path, {"a@h.fr": "old"})

    class ChangingHasher(RecordingHasher):
        def verify(self, hash_, password):
            result = super().verify(hash_, password)
            if len(self.calls) == 1:
                write_credentials(path, {"a@h.fr": "new"})
                touch_later(path)
                store.has_password("a@h.fr")  # another thread reloads meanwhile
            return result

    hasher = ChangingHasher()
    store = CredentialStore(path, hasher=hasher)
    assert store.verify("a@h.fr", "old")  # it was right when asked
    assert not store.verify("a@h.fr", "old")
    assert store.verify("a@h.fr", "new")


def test_cache_ttl_zero_disables_the_cache(tmp_path):
    path = tmp_path / "credentials.json"
    write_credentials(path, {"a@h.fr": "pw-a"})
    store, hasher = cached_store(path, cache_ttl=0)
    for _ in range(3):
        assert store.verify("a@h.fr", "pw-a")
        assert asyncio.run(store.verify_async("a@h.fr", "pw-a"))
    assert len(hasher.calls) == 6


def test_verify_async_uses_its_own_pool_and_answers_hits_on_the_loop(tmp_path):
    path = tmp_path / "credentials.json"
    write_credentials(path, {"a@h.fr": "pw-a"})
    threads: list[str] = []

    class ThreadRecordingHasher(RecordingHasher):
        def verify(self, hash_, password):
            threads.append(threading.current_thread().name)
            return super().verify(hash_, password)

    store = CredentialStore(path, hasher=ThreadRecordingHasher())
    assert store.executor is verification_executor()
    assert store.executor._max_workers == VERIFY_THREADS

    async def logins() -> list[bool]:
        default_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="default")
        asyncio.get_running_loop().set_default_executor(default_pool)
        first = await store.verify_async("a@h.fr", "pw-a")
        wrong = await store.verify_async("a@h.fr", "wrong")
        again = [await store.verify_async("a@h.fr", "pw-a") for _ in range(3)]
        return [first, wrong, *again]

    assert asyncio.run(logins()) == [True, False, True, True, True]
    assert len(threads) == 2  # the three repeats were cache hits
    assert all(name.startswith("argon2") for name in threads)


def test_verify_async_rechecks_the_file_before_a_cache_hit(tmp_path):
    path = tmp_path / "credentials.json"
    write_credentials(path, {"a@h.fr": "old"})
    store, hasher = cached_store(path)

    async def login(password: str) -> bool:
        return await store.verify_async("a@h.fr", password)

    assert asyncio.run(login("old")) and asyncio.run(login("old"))
    assert len(hasher.calls) == 1
    write_credentials(path, {"a@h.fr": "new"})
    touch_later(path)
    assert not asyncio.run(login("old"))
    assert asyncio.run(login("new"))
    path.write_text("{broken", encoding="utf-8")
    touch_later(path)
    with pytest.raises(CredentialsUnavailable):
        asyncio.run(login("new"))


def test_cache_is_bounded(tmp_path):
    path = tmp_path / "credentials.json"
    write_credentials(path, {f"u{n}@h.fr": f"pw{n}" for n in range(4)})
    store, hasher = cached_store(path, cache_size=2)
    for n in range(4):
        assert store.verify(f"u{n}@h.fr", f"pw{n}")
    assert len(store._cache) == 2
    assert store.verify("u3@h.fr", "pw3")
    assert store.verify("u0@h.fr", "pw0")  # evicted: verified again
    assert len(hasher.calls) == 5


def test_auth_settings_cache_ttl():
    assert AuthSettings().cache_ttl == 300.0
    assert AuthSettings.model_validate({"cache_ttl": "0"}).cache_ttl == 0.0
    assert AuthSettings.model_validate({"cache_ttl": "10m"}).cache_ttl == 600.0
    with pytest.raises(ValidationError):
        AuthSettings.model_validate({"cache_ttl": -1})
