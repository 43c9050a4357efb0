"""Mailbox passwords: argon2id hashes of the store's accounts, constant-time answers.

The hashes are the ``password_hash`` column of the store's accounts (``mssante-operator account``), so
every node of one database checks the same passwords; HOME's ``credentials.json`` (what the demo kit
writes: address -> PHC string) is imported once, at the first start (``app.import_credentials``),
and not read afterwards. An unreachable store is a temporary failure (:class:`CredentialsUnavailable`).

Verification is deliberately slow (argon2): callers await :meth:`CredentialStore.verify_async`,
which runs the check on a small thread pool of its own (:data:`VERIFY_THREADS` per process), so that
password checks never take the threads of the default executor (store reads) and at most that many
argon2 memory blocks are allocated at once. An address without a password is verified against a dummy
hash so that the answer takes as long as for a known one and timing does not reveal which mailboxes
have a password. Passwords are never logged.

New hashes use the argon2id parameters of :func:`password_hasher` (OWASP's recommendation); hashes
written with other parameters still verify (the PHC string carries them) and are rewritten with the
current ones at the next successful login (unless the password was changed meanwhile).

Verified-login cache (as Dovecot's auth cache): after a successful verification the store remembers
(address, HMAC-SHA256 of the password under a random per-process key) -> the hash it was verified
against, for ``cache_ttl`` seconds; a later login with the same address and password, while the account
still holds that very hash, answers without argon2: mail clients log in again and again with the same
password. Only successes are cached: a wrong password always costs a full verification. A changed
password changes the hash, so it is never accepted from the cache. Neither the password nor its digest
is ever logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cachetools import TTLCache

from mssante_base.passwords import password_hasher

from ..store.accounts import AccountRecord, AccountsUnavailable
from ..store.database import now

if TYPE_CHECKING:
    from ..store.accounts import Accounts

log = logging.getLogger(__name__)


VERIFY_THREADS = 2  # argon2 verifications at once per process (each holds ARGON2_MEMORY_KIB)
CACHE_TTL = 300.0  # seconds a verified login is remembered; 0 disables the cache
CACHE_SIZE = 10_000  # verified logins remembered at most (least recently used ones go first)
LOGIN_RECORD_INTERVAL = 60.0  # seconds: an account's last_login is written at most this often per process

CredentialsUnavailable = AccountsUnavailable  # the store cannot be read: answer a temporary failure

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def verification_executor() -> ThreadPoolExecutor:
    """The process's argon2 thread pool (:data:`VERIFY_THREADS` threads, started on first use)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=VERIFY_THREADS, thread_name_prefix="argon2")
        return _executor


def normalize_address(address: str) -> str:
    """Addresses are compared lower-cased and stripped, as the annuaire stores them."""
    return address.strip().lower()


class CredentialStore:
    """The accounts' passwords (and state) as the authenticator asks for them.

    Thread-safe: verifications run in worker threads (:meth:`verify_async` uses :attr:`executor`).
    ``cache_ttl`` (seconds, 0: no cache) and ``cache_size`` bound the verified-login cache; ``clock``
    is its time source and the last-login throttle's (tests inject one).
    """

    def __init__(
        self,
        accounts: Accounts,
        *,
        hasher: PasswordHasher | None = None,
        rehash: bool = True,
        cache_ttl: float = CACHE_TTL,
        cache_size: int = CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
        executor: ThreadPoolExecutor | None = None,
        login_interval: float = LOGIN_RECORD_INTERVAL,
    ) -> None:
        self.accounts = accounts
        self._hasher = hasher or password_hasher()
        self._rehash = rehash
        self._executor = executor
        self._clock = clock
        self._lock = threading.Lock()
        # (address, HMAC of the password) -> the hash it was verified against.
        self._cache: TTLCache[tuple[str, bytes], str] | None = (
            TTLCache(maxsize=max(cache_size, 1), ttl=cache_ttl, timer=clock) if cache_ttl > 0 and cache_size > 0
            else None
        )
        self._cache_key = secrets.token_bytes(32)
        self._recorded: TTLCache[str, bool] = TTLCache(maxsize=max(cache_size, 1), ttl=login_interval, timer=clock)
        # Same parameters as new hashes, so an unknown address costs what a known one does.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    @property
    def executor(self) -> ThreadPoolExecutor:
        """Where :meth:`verify_async` runs argon2: the process's small pool, not the default executor."""
        return self._executor or verification_executor()

    # -- reading ---------------------------------------------------------------------------------

    async def lookup(self, address: str) -> AccountRecord | None:
        """The account of ``address`` (a store read, on the default executor); raises CredentialsUnavailable."""
        address = normalize_address(address)
        if not address:
            return None
        return await asyncio.to_thread(self.accounts.get, address)

    # -- verifying -------------------------------------------------------------------------------

    def _digest(self, address: str, password: str) -> bytes:
        """HMAC-SHA256 of the password (and address) under this process's random key: the cache's key."""
        message = address.encode("utf-8") + b"\0" + password.encode("utf-8", "surrogatepass")
        return hmac.digest(self._cache_key, message, hashlib.sha256)

    def _cached(self, address: str, password: str, stored: str | None) -> bool:
        """Whether this login was verified against ``stored`` less than ``cache_ttl`` ago (cheap: one HMAC)."""
        if self._cache is None or stored is None:
            return False
        digest = self._digest(address, password)
        with self._lock:
            return self._cache.get((address, digest)) == stored

    async def verify_async(self, address: str, password: str, account: AccountRecord | None) -> bool:
        """:meth:`verify_hash` for the event loop, against ``account`` as :meth:`lookup` read it: a cached
        login answers at once, argon2 runs on :attr:`executor`."""
        address = normalize_address(address)
        stored = account.password_hash if account is not None else None
        if self._cached(address, password, stored):
            return True
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.verify_hash, address, password, stored)

    def verify(self, address: str, password: str) -> bool:
        """True when ``password`` is the one of ``address`` (reads the account; for tools and tests)."""
        account = self.accounts.get(normalize_address(address)) if normalize_address(address) else None
        return self.verify_hash(address, password, account.password_hash if account is not None else None)

    def verify_hash(self, address: str, password: str, stored: str | None) -> bool:
        """True when ``password`` matches ``stored`` (the hash of ``address``). Slow on purpose; off the loop.

        Takes about the same time whether or not there is a hash, unless this very address and password
        were verified against ``stored`` less than ``cache_ttl`` ago. On success, a hash made with
        parameters other than the current hasher's is replaced (when built with ``rehash=True``).
        """
        address = normalize_address(address)
        if self._cached(address, password, stored):
            return True
        if stored is None:
            with contextlib.suppress(VerificationError, InvalidHashError):
                self._hasher.verify(self._dummy, password)
            return False
        try:
            self._hasher.verify(stored, password)
        except VerifyMismatchError:
            return False
        except (VerificationError, InvalidHashError):
            log.warning("the account of %s holds an unusable password hash", address)
            return False
        if self._rehash and self._hasher.check_needs_rehash(stored):
            try:
                if self.accounts.replace_password_hash(address, stored, self._hasher.hash(password)):
                    log.info("password hash of %s upgraded to the current argon2 parameters", address)
            except AccountsUnavailable as exc:
                log.warning("could not upgrade the password hash of %s: %s", address, exc)
            return True  # not cached: the hash changed, the next login verifies the new one
        if self._cache is not None:
            with self._lock:
                self._cache[(address, self._digest(address, password))] = stored
        return True

    # -- after a login ---------------------------------------------------------------------------

    async def logged_in(self, address: str) -> None:
        """Record a successful login as the account's last_login, at most once per ``login_interval``."""
        address = normalize_address(address)
        with self._lock:
            if self._recorded.get(address):
                return
            self._recorded[address] = True
        try:
            await asyncio.to_thread(self.accounts.record_login, address, now())
        except AccountsUnavailable as exc:  # the login itself succeeded: only its date is lost
            log.warning("could not record the login of %s: %s", address, exc)
