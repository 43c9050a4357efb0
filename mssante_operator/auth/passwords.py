"""Mailbox passwords: HOME's ``credentials.json``, argon2id hashes, constant-time answers.

The file is what the demo kit writes: one JSON object mapping a lower-cased mailbox address to its
argon2 hash (PHC string, ``$argon2id$v=19$m=…,t=…,p=…$salt$hash``), mode 0600. It is re-read when it
changes on disk (modification time, size or inode), so a password set by the CLI or an edit takes
effect without a restart. A file that cannot be parsed fails closed: password logins answer a
temporary failure (:class:`CredentialsUnavailable`) until it is fixed; a missing file means "no
passwords" (certificate and token logins still work).

Verification is deliberately slow (argon2): callers await :meth:`CredentialStore.verify_async`,
which runs :meth:`CredentialStore.verify` on a small thread pool of its own (:data:`VERIFY_THREADS`
per process), so that password checks never take the threads of the default executor (store reads)
and at most that many argon2 memory blocks are allocated at once. An unknown address is verified
against a dummy hash so that the answer takes as long as for a known one and timing does not reveal
which mailboxes have a password. Passwords are never logged.

New hashes use the argon2id parameters of :func:`password_hasher` (OWASP's recommendation); hashes
written with other parameters still verify (the PHC string carries them) and are rewritten with the
current ones at the next successful login.

Verified-login cache (as Dovecot's auth cache): after a successful verification the store remembers
(address, HMAC-SHA256 of the password under a random per-process key) for ``cache_ttl`` seconds, and
a later login with the same address and password answers without argon2: mail clients log in again
and again with the same password. Only successes are cached: a wrong password always costs a full
verification (and unknown addresses keep costing what known ones do). The cache is emptied whenever
the file changes, and an entry is also tied to the hash it was verified against, so a changed or
removed password is never accepted from it. Neither the password nor its digest is ever logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cachetools import TTLCache

from mssante_base.errors import TemporaryFailure
from mssante_base.passwords import password_hasher

log = logging.getLogger(__name__)


VERIFY_THREADS = 2  # argon2 verifications at once per process (each holds ARGON2_MEMORY_KIB)
CACHE_TTL = 300.0  # seconds a verified login is remembered; 0 disables the cache
CACHE_SIZE = 10_000  # verified logins remembered at most (least recently used ones go first)

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def verification_executor() -> ThreadPoolExecutor:
    """The process's argon2 thread pool (:data:`VERIFY_THREADS` threads, started on first use)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=VERIFY_THREADS, thread_name_prefix="argon2")
        return _executor


class CredentialsUnavailable(TemporaryFailure):
    """The credentials file exists but cannot be read or parsed: answer a temporary failure."""


def normalize_address(address: str) -> str:
    """Addresses are compared lower-cased and stripped, as the annuaire stores them."""
    return address.strip().lower()


def _parse(data: bytes, path: Path) -> dict[str, str]:
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CredentialsUnavailable(f"credentials file {path} is not valid JSON") from exc
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise CredentialsUnavailable(f"credentials file {path} must map addresses to hash strings")
    return {normalize_address(k): v for k, v in raw.items()}


def _stamp(stat: os.stat_result | None) -> tuple[int, int, int] | None:
    """What tells a changed file: modification time, size, inode."""
    return None if stat is None else (stat.st_mtime_ns, stat.st_size, stat.st_ino)


class CredentialStore:
    """Password hashes of the mailboxes, read from (and written to) one JSON file.

    Thread-safe: :meth:`verify` runs in worker threads (:meth:`verify_async` uses :attr:`executor`).
    ``cache_ttl`` (seconds, 0: no cache) and ``cache_size`` bound the verified-login cache; ``clock``
    is its time source (tests inject one).
    """

    def __init__(
        self,
        path: Path,
        *,
        hasher: PasswordHasher | None = None,
        rehash: bool = True,
        cache_ttl: float = CACHE_TTL,
        cache_size: int = CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self.path = Path(path)
        self._hasher = hasher or password_hasher()
        self._rehash = rehash
        self._executor = executor
        self._lock = threading.Lock()
        self._hashes: dict[str, str] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._error: CredentialsUnavailable | None = None
        self._generation = 0  # bumped whenever the hashes may have changed: no caching across it
        # (address, HMAC of the password) -> the hash it was verified against.
        self._cache: TTLCache[tuple[str, bytes], str] | None = (
            TTLCache(maxsize=max(cache_size, 1), ttl=cache_ttl, timer=clock) if cache_ttl > 0 and cache_size > 0
            else None
        )
        self._cache_key = secrets.token_bytes(32)
        # Same parameters as new hashes, so an unknown address costs what a known one does.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    @property
    def executor(self) -> ThreadPoolExecutor:
        """Where :meth:`verify_async` runs argon2: the process's small pool, not the default executor."""
        return self._executor or verification_executor()

    # -- reading ---------------------------------------------------------------------------------

    def _stat(self) -> os.stat_result | None:
        """The file's status; None when it is missing; CredentialsUnavailable when it cannot be read."""
        try:
            return self.path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CredentialsUnavailable(f"credentials file {self.path} cannot be read: {exc}") from exc

    def _forget(self) -> None:
        """The hashes changed (or may have): empty the login cache. Call with ``self._lock`` held."""
        self._generation += 1
        if self._cache is not None:
            self._cache.clear()

    def _load(self) -> tuple[dict[str, str], int]:
        """The hashes (re-read when the file changed) and their generation; raises CredentialsUnavailable."""
        stat = self._stat()
        stamp = _stamp(stat)
        with self._lock:
            if stat is None:
                if self._stamp is not None or self._error is not None or self._hashes:
                    log.warning("credentials file %s is missing: no password logins", self.path)
                    self._forget()
                self._hashes, self._stamp, self._error = {}, None, None
                return self._hashes, self._generation
            if stamp != self._stamp:
                self._stamp = stamp
                self._forget()
                try:
                    self._hashes, self._error = _parse(self.path.read_bytes(), self.path), None
                    if stat.st_mode & 0o077:
                        log.warning("credentials file %s is readable by other users (mode %o)",
                                    self.path, stat.st_mode & 0o777)
                except OSError as exc:
                    self._hashes = {}
                    self._error = CredentialsUnavailable(f"credentials file {self.path} cannot be read: {exc}")
                except CredentialsUnavailable as exc:
                    self._hashes, self._error = {}, exc
                if self._error is not None:
                    log.error("%s; password logins fail until it is fixed", self._error)
            if self._error is not None:
                raise self._error
            return self._hashes, self._generation

    def _current(self) -> dict[str, str]:
        """The hashes, re-read when the file changed; raises CredentialsUnavailable when unparsable."""
        return self._load()[0]

    def has_password(self, address: str) -> bool:
        """Whether ``address`` has a password (for tools; logins must use :meth:`verify`)."""
        return normalize_address(address) in self._current()

    def addresses(self) -> list[str]:
        """The addresses that have a password, sorted."""
        return sorted(self._current())

    # -- verifying -------------------------------------------------------------------------------

    def _digest(self, address: str, password: str) -> bytes:
        """HMAC-SHA256 of the password (and address) under this process's random key: the cache's key."""
        message = address.encode("utf-8") + b"\0" + password.encode("utf-8", "surrogatepass")
        return hmac.digest(self._cache_key, message, hashlib.sha256)

    def _cached(self, address: str, digest: bytes, stored: str) -> bool:
        """Whether this login was verified against ``stored`` less than ``cache_ttl`` ago. Lock held."""
        return self._cache is not None and self._cache.get((address, digest)) == stored

    def _cached_fresh(self, address: str, password: str) -> bool:
        """A cache hit without reading the file: only while the file is unchanged since the last load.

        Cheap (one stat, one HMAC) and never blocks on argon2, so :meth:`verify_async` asks it on the
        event loop; any doubt (file changed, missing, unreadable) answers False and the full
        :meth:`verify` decides.
        """
        if self._cache is None:
            return False
        try:
            stamp = _stamp(self._stat())
        except CredentialsUnavailable:
            return False
        address = normalize_address(address)
        digest = self._digest(address, password)
        with self._lock:
            if stamp is None or stamp != self._stamp or self._error is not None:
                return False
            stored = self._hashes.get(address)
            return stored is not None and self._cached(address, digest, stored)

    async def verify_async(self, address: str, password: str) -> bool:
        """:meth:`verify` for the event loop: a cached login answers at once, argon2 runs on :attr:`executor`."""
        if self._cached_fresh(address, password):
            return True
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.verify, address, password)

    def verify(self, address: str, password: str) -> bool:
        """True when ``password`` is the one of ``address``. Slow on purpose; run it off the event loop.

        Takes about the same time whether or not the address exists, unless this very address and
        password were verified less than ``cache_ttl`` ago (then it answers from the cache). On
        success, a hash made with parameters other than the current hasher's is replaced (when the
        store was built with ``rehash=True``). Raises CredentialsUnavailable when the file is unparsable.
        """
        address = normalize_address(address)
        hashes, generation = self._load()
        stored = hashes.get(address)
        digest = self._digest(address, password) if self._cache is not None else None
        if stored is not None and digest is not None:
            with self._lock:
                if self._cached(address, digest, stored):
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
            log.warning("credentials file %s holds an unusable hash for %s", self.path, address)
            return False
        if self._rehash and self._hasher.check_needs_rehash(stored):
            try:
                self._update(lambda hashes: self._replace_if_unchanged(hashes, address, stored, password))
                log.info("password hash of %s upgraded to the current argon2 parameters", address)
            except OSError as exc:
                log.warning("could not upgrade the password hash of %s: %s", address, exc)
            return True  # not cached: the file changed, the next login verifies the new hash
        if digest is not None:
            with self._lock:
                # Not if the file was reloaded meanwhile: ``stored`` may be a password changed since.
                if self._cache is not None and generation == self._generation:
                    self._cache[(address, digest)] = stored
        return True

    def _replace_if_unchanged(self, hashes: dict[str, str], address: str, stored: str, password: str) -> None:
        # Another process may have set a new password meanwhile: never overwrite it with the old one.
        if hashes.get(address) == stored:
            hashes[address] = self._hasher.hash(password)

    # -- writing ---------------------------------------------------------------------------------

    def set_password(self, address: str, password: str) -> None:
        """Set (or replace) the password of ``address``: hashed with argon2id, written atomically."""
        if not password:
            raise ValueError("password must not be empty")
        address = normalize_address(address)
        if not address:
            raise ValueError("address must not be empty")
        new_hash = self._hasher.hash(password)

        def change(hashes: dict[str, str]) -> None:
            hashes[address] = new_hash

        self._update(change)

    def remove(self, address: str) -> bool:
        """Remove the password of ``address``; False when it had none."""
        address = normalize_address(address)
        removed = False

        def change(hashes: dict[str, str]) -> None:
            nonlocal removed
            removed = hashes.pop(address, None) is not None

        self._update(change)
        return removed

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        """An exclusive lock on a sidecar file: worker processes and the CLI update one at a time."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _update(self, change: Callable[[dict[str, str]], None]) -> None:
        """Read the file afresh under the lock, apply ``change``, write it back atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._file_lock():
            try:
                hashes = _parse(self.path.read_bytes(), self.path)
            except FileNotFoundError:
                hashes = {}
            change(hashes)
            _write_atomically(self.path, hashes)
        with self._lock:  # re-read at the next question, even if the stat were to look the same
            self._stamp = None
            self._forget()


def _write_atomically(path: Path, hashes: dict[str, str]) -> None:
    """Temporary file (0600) in the same folder, fsync, rename over, fsync the folder."""
    data = (json.dumps(dict(sorted(hashes.items())), ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
