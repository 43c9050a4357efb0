"""CredentialStore over the store's accounts: argon2id, dummy-hash timing, rehash, the verified-login cache."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
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
from mssante_operator.store import Store
from mssante_operator.store.accounts import Accounts

FAST = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
STRONGER = PasswordHasher(time_cost=2, memory_cost=128, parallelism=1)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "blobs")
    store.migrate()
    yield store
    store.close()


@pytest.fixture
def accounts(store: Store) -> Accounts:
    return store.accounts


def write_credentials(accounts: Accounts, passwords: dict[str, str], hasher: PasswordHasher = FAST) -> None:
    """Give each address an account with that password (replacing the hash of an existing one)."""
    now = Store.now()
    for address, password in passwords.items():
        if accounts.get(address) is None:
            accounts.add(address, "PER", actor="test", at=now, password_hash=hasher.hash(password))
        else:
            accounts.set_password_hash(address, hasher.hash(password), actor="test", at=now)


def stored_hash(accounts: Accounts, address: str) -> str | None:
    record = accounts.get(address)
    return None if record is None else record.password_hash


def test_demo_kit_format_with_the_product_hasher(accounts):
    write_credentials(accounts, {"dr.martin@h.fr": "pw-martin", "labo-auto@h.fr": "pw-labo"}, password_hasher())
    before = stored_hash(accounts, "dr.martin@h.fr")
    store = CredentialStore(accounts)
    assert store.verify("dr.martin@h.fr", "pw-martin")
    assert store.verify("  DR.Martin@H.fr ", "pw-martin")
    assert not store.verify("dr.martin@h.fr", "pw-labo")
    assert not store.verify("nobody@h.fr", "pw-martin")
    assert stored_hash(accounts, "dr.martin@h.fr") == before  # current parameters: nothing to rewrite


def test_new_hashes_use_the_owasp_parameters():
    params = extract_parameters(password_hasher().hash("pw"))
    assert (params.type.name, params.memory_cost, params.time_cost, params.parallelism) == ("ID", 19456, 2, 1)


def test_hashes_of_older_kits_still_verify(accounts):
    # Kits written before: argon2-cffi's defaults (64 MiB, t=3, p=4). They verify with their own
    # parameters, and a successful login rewrites them with the current ones.
    write_credentials(accounts, {"dr.martin@h.fr": "pw-martin", "labo-auto@h.fr": "pw-labo"}, PasswordHasher())
    assert extract_parameters(stored_hash(accounts, "dr.martin@h.fr")) == RFC_9106_LOW_MEMORY
    store = CredentialStore(accounts)
    assert store.verify("dr.martin@h.fr", "pw-martin")
    assert store.verify("  DR.Martin@H.fr ", "pw-martin")
    assert not store.verify("dr.martin@h.fr", "pw-labo")
    assert not store.verify("nobody@h.fr", "pw-martin")
    assert stored_hash(accounts, "dr.martin@h.fr").startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert extract_parameters(stored_hash(accounts, "labo-auto@h.fr")) == RFC_9106_LOW_MEMORY  # not logged in yet


class RecordingHasher(PasswordHasher):
    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=64, parallelism=1)
        self.calls: list[str] = []

    def verify(self, hash_, password):
        self.calls.append(hash_)
        return super().verify(hash_, password)


def test_unknown_user_is_verified_against_a_dummy_hash(accounts):
    write_credentials(accounts, {"a@h.fr": "pw"})
    accounts.add("cert-only@h.fr", "APP", actor="test", at=Store.now(), cert_sha256="00" * 32)
    hasher = RecordingHasher()
    store = CredentialStore(accounts, hasher=hasher)
    calls = hasher.calls
    assert not store.verify("ghost@h.fr", "pw")
    assert not store.verify("a@h.fr", "wrong")
    assert not store.verify("cert-only@h.fr", "pw")  # an account without a password: the dummy too
    assert len(calls) == 3  # one argon2 verification each: same work, same time
    assert calls[0] != calls[1] and calls[2] == calls[0]


def test_no_accounts_means_no_passwords(accounts):
    store = CredentialStore(accounts, hasher=FAST)
    assert not store.verify("a@h.fr", "pw")
    assert not store.verify("", "pw")


def test_a_changed_password_takes_effect_at_once(accounts):
    write_credentials(accounts, {"a@h.fr": "old"})
    store = CredentialStore(accounts, hasher=FAST)
    assert store.verify("a@h.fr", "old")
    write_credentials(accounts, {"a@h.fr": "new", "b@h.fr": "b"})  # `account passwd` / `add`, any node
    assert store.verify("a@h.fr", "new")
    assert not store.verify("a@h.fr", "old")
    assert store.verify("b@h.fr", "b")


def test_an_unreachable_store_fails_closed(accounts, store):
    write_credentials(accounts, {"a@h.fr": "pw"})
    credentials = CredentialStore(accounts, hasher=FAST)
    assert credentials.verify("a@h.fr", "pw")
    store.engine.dispose()
    Path(store.engine.url.database).unlink()
    Path(store.engine.url.database).mkdir()  # no longer a database file
    with pytest.raises(CredentialsUnavailable):
        credentials.verify("a@h.fr", "pw")
    with pytest.raises(CredentialsUnavailable):
        asyncio.run(credentials.lookup("a@h.fr"))


def test_unusable_hash_is_a_failure_not_a_crash(accounts):
    accounts.add("a@h.fr", "PER", actor="test", at=Store.now(), password_hash="plaintext-oops")
    store = CredentialStore(accounts, hasher=FAST)
    assert not store.verify("a@h.fr", "plaintext-oops")


def test_weak_hash_is_upgraded_on_successful_login(accounts):
    write_credentials(accounts, {"a@h.fr": "pw", "b@h.fr": "other"}, FAST)
    before = {a: stored_hash(accounts, a) for a in ("a@h.fr", "b@h.fr")}
    store = CredentialStore(accounts, hasher=STRONGER)
    assert not store.verify("a@h.fr", "wrong")
    assert stored_hash(accounts, "a@h.fr") == before["a@h.fr"]  # nothing rewritten on failure
    assert store.verify("a@h.fr", "pw")
    after = stored_hash(accounts, "a@h.fr")
    assert after != before["a@h.fr"]
    assert not STRONGER.check_needs_rehash(after)
    assert stored_hash(accounts, "b@h.fr") == before["b@h.fr"]
    assert store.verify("a@h.fr", "pw")
    assert CredentialStore(accounts, hasher=FAST, rehash=False).verify("a@h.fr", "pw")


def test_a_rehash_never_undoes_a_password_changed_meanwhile(accounts):
    write_credentials(accounts, {"a@h.fr": "old"}, FAST)
    weak = stored_hash(accounts, "a@h.fr")
    write_credentials(accounts, {"a@h.fr": "new"}, FAST)  # `account passwd` while the old login was verified
    store = CredentialStore(accounts, hasher=STRONGER)
    assert store.verify_hash("a@h.fr", "old", weak)  # right when asked
    assert store.verify("a@h.fr", "new") and not store.verify("a@h.fr", "old")


def test_no_upgrade_when_disabled(accounts):
    write_credentials(accounts, {"a@h.fr": "pw"}, FAST)
    before = stored_hash(accounts, "a@h.fr")
    assert CredentialStore(accounts, hasher=STRONGER, rehash=False).verify("a@h.fr", "pw")
    assert stored_hash(accounts, "a@h.fr") == before


def test_passwords_never_logged(accounts, caplog):
    write_credentials(accounts, {"a@h.fr": "Sup3r-Secret"}, FAST)
    with caplog.at_level(logging.DEBUG):
        store = CredentialStore(accounts, hasher=STRONGER)
        store.verify("a@h.fr", "Sup3r-Secret")
        store.verify("a@h.fr", "Wr0ng-Secret")
        write_credentials(accounts, {"a@h.fr": "N3w-Secret"})
    assert "Secret" not in caplog.text
    assert "$argon2" not in caplog.text


def test_last_login_is_written_at_most_once_per_interval(accounts):
    write_credentials(accounts, {"a@h.fr": "pw"})
    clock = Clock()
    store = CredentialStore(accounts, hasher=FAST, clock=clock, login_interval=60)
    assert accounts.get("a@h.fr").last_login_at is None
    asyncio.run(store.logged_in("A@h.fr"))
    first = accounts.get("a@h.fr").last_login_at
    assert first is not None
    asyncio.run(store.logged_in("a@h.fr"))
    assert accounts.get("a@h.fr").last_login_at == first  # within the minute: no write
    clock.now += 61
    asyncio.run(store.logged_in("a@h.fr"))
    assert accounts.get("a@h.fr").last_login_at > first
    asyncio.run(store.logged_in("ghost@h.fr"))  # no account: nothing to write, no error
    assert accounts.get("ghost@h.fr") is None


# -- verified-login cache ------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cached_store(accounts: Accounts, **kwargs) -> tuple[CredentialStore, RecordingHasher]:
    hasher = RecordingHasher()
    store = CredentialStore(accounts, hasher=hasher, **kwargs)
    hasher.calls.clear()  # the dummy hash is made, not verified
    return store, hasher


def test_cache_hit_skips_argon2(accounts):
    write_credentials(accounts, {"a@h.fr": "pw-a", "b@h.fr": "pw-b"})
    store, hasher = cached_store(accounts)
    assert store.verify("a@h.fr", "pw-a")
    assert len(hasher.calls) == 1
    assert store.verify("a@h.fr", "pw-a")
    assert store.verify(" A@H.fr", "pw-a")  # the same address
    assert len(hasher.calls) == 1
    assert store.verify("b@h.fr", "pw-b")  # another account: its own verification
    assert len(hasher.calls) == 2
    # The cache holds digests, never the password.
    assert all(b"pw-a" not in digest and len(digest) == 32 for _, digest in store._cache)


def test_wrong_passwords_are_never_cached(accounts):
    write_credentials(accounts, {"a@h.fr": "pw-a"})
    store, hasher = cached_store(accounts)
    assert not store.verify("a@h.fr", "wrong")
    assert not store.verify("a@h.fr", "wrong")
    assert len(hasher.calls) == 2
    assert store.verify("a@h.fr", "pw-a")
    assert not store.verify("a@h.fr", "wrong")  # a cached success does not shortcut a failure
    assert not store.verify("a@h.fr", "pw-a ")
    assert not store.verify("ghost@h.fr", "pw-a")  # unknown: still a full (dummy) verification
    assert len(hasher.calls) == 6


def test_cache_entries_expire(accounts):
    write_credentials(accounts, {"a@h.fr": "pw-a"})
    clock = Clock()
    store, hasher = cached_store(accounts, cache_ttl=60, clock=clock)
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


def test_default_cache_ttl_is_five_minutes(accounts):
    write_credentials(accounts, {"a@h.fr": "pw-a"})
    clock = Clock()
    store, hasher = cached_store(accounts, clock=clock)
    assert CACHE_TTL == 300
    assert store.verify("a@h.fr", "pw-a")
    clock.now += 299
    assert store.verify("a@h.fr", "pw-a")
    clock.now += 2
    assert store.verify("a@h.fr", "pw-a")
    assert len(hasher.calls) == 2


def test_a_changed_password_is_refused_from_the_cache(accounts):
    write_credentials(accounts, {"a@h.fr": "old", "b@h.fr": "pw-b"})
    store, hasher = cached_store(accounts)
    assert store.verify("a@h.fr", "old") and store.verify("b@h.fr", "pw-b")
    assert len(hasher.calls) == 2
    write_credentials(accounts, {"a@h.fr": "new"})  # `account passwd`, any node
    assert not store.verify("a@h.fr", "old")
    assert store.verify("a@h.fr", "new")
    assert store.verify("b@h.fr", "pw-b")  # unchanged: still a hit
    assert len(hasher.calls) == 4

def test_a_password_changed_during_its_verification_is_not_accepted_from_the_cache(accounts):
    # The hash changes while argon2 runs on the old one: that success is tied to the old hash.
    write_credentials(accounts, {"a@h.fr": "old"})

    class ChangingHasher(RecordingHasher):
        def verify(self, hash_, password):
            result = super().verify(hash_, password)
            if len(self.calls) == 1:
                write_credentials(accounts, {"a@h.fr": "new"})
            return result

    store = CredentialStore(accounts, hasher=ChangingHasher())
    assert store.verify("a@h.fr", "old")  # it was right when asked
    assert not store.verify("a@h.fr", "old")
    assert store.verify("a@h.fr", "new")

def test_cache_ttl_zero_disables_the_cache(accounts):
    write_credentials(accounts, {"a@h.fr": "pw-a"})
    store, hasher = cached_store(accounts, cache_ttl=0)
    for _ in range(3):
        assert store.verify("a@h.fr", "pw-a")
        assert asyncio.run(store.verify_async("a@h.fr", "pw-a", accounts.get("a@h.fr")))
    assert len(hasher.calls) == 6


def test_verify_async_uses_its_own_pool_and_answers_hits_on_the_loop(accounts):
    write_credentials(accounts, {"a@h.fr": "pw-a"})
    threads: list[str] = []

    class ThreadRecordingHasher(RecordingHasher):
        def verify(self, hash_, password):
            threads.append(threading.current_thread().name)
            return super().verify(hash_, password)

    store = CredentialStore(accounts, hasher=ThreadRecordingHasher())
    assert store.executor is verification_executor()
    assert store.executor._max_workers == VERIFY_THREADS

    async def logins() -> list[bool]:
        default_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="default")
        asyncio.get_running_loop().set_default_executor(default_pool)
        async def login(password: str) -> bool:
            return await store.verify_async("a@h.fr", password, await store.lookup("a@h.fr"))

        first = await login("pw-a")
        wrong = await login("wrong")
        again = [await login("pw-a") for _ in range(3)]
        return [first, wrong, *again]

    assert asyncio.run(logins()) == [True, False, True, True, True]
    assert len(threads) == 2  # the three repeats were cache hits
    assert all(name.startswith("argon2") for name in threads)


def test_verify_async_rechecks_the_hash_before_a_cache_hit(accounts):
    write_credentials(accounts, {"a@h.fr": "old"})
    store, hasher = cached_store(accounts)

    async def login(password: str) -> bool:
        return await store.verify_async("a@h.fr", password, await store.lookup("a@h.fr"))

    assert asyncio.run(login("old")) and asyncio.run(login("old"))
    assert len(hasher.calls) == 1
    write_credentials(accounts, {"a@h.fr": "new"})
    assert not asyncio.run(login("old"))
    assert asyncio.run(login("new"))

def test_cache_is_bounded(accounts):
    write_credentials(accounts, {f"u{n}@h.fr": f"pw{n}" for n in range(4)})
    store, hasher = cached_store(accounts, cache_size=2)
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
