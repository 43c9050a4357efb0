"""Mailbox passwords: HOME's ``credentials.json``, argon2id hashes, constant-time answers.

The file is what the demo kit writes: one JSON object mapping a lower-cased mailbox address to its
argon2 hash (PHC string, ``$argon2id$v=19$m=…,t=…,p=…$salt$hash``), mode 0600. It is re-read when it
changes on disk (modification time, size or inode), so a password set by the CLI or an edit takes
effect without a restart. A file that cannot be parsed fails closed: password logins answer a
temporary failure (:class:`CredentialsUnavailable`) until it is fixed; a missing file means "no
passwords" (certificate and token logins still work).

Verification is deliberately slow (argon2): callers run :meth:`CredentialStore.verify` off the event
loop. An unknown address is verified against a dummy hash so that the answer takes as long as for a
known one and timing does not reveal which mailboxes have a password. Passwords are never logged.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ..errors import TemporaryFailure

log = logging.getLogger(__name__)


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


class CredentialStore:
    """Password hashes of the mailboxes, read from (and written to) one JSON file.

    Thread-safe: :meth:`verify` is meant to run in worker threads (``asyncio.to_thread``).
    """

    def __init__(
        self, path: Path, *, hasher: PasswordHasher | None = None, rehash: bool = True,
    ) -> None:
        self.path = Path(path)
        self._hasher = hasher or PasswordHasher()
        self._rehash = rehash
        self._lock = threading.Lock()
        self._hashes: dict[str, str] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._error: CredentialsUnavailable | None = None
        # Same parameters as real hashes, so an unknown address costs what a known one does.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    # -- reading ---------------------------------------------------------------------------------

    def _current(self) -> dict[str, str]:
        """The hashes, re-read when the file changed; raises CredentialsUnavailable when unparsable."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            stamp = None
        except OSError as exc:
            raise CredentialsUnavailable(f"credentials file {self.path} cannot be read: {exc}") from exc
        else:
            stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        with self._lock:
            if stamp is None:
                if self._stamp is not None or self._error is not None:
                    log.warning("credentials file %s is missing: no password logins", self.path)
                self._hashes, self._stamp, self._error = {}, None, None
                return self._hashes
            if stamp != self._stamp:
                self._stamp = stamp
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
            return self._hashes

    def has_password(self, address: str) -> bool:
        """Whether ``address`` has a password (for tools; logins must use :meth:`verify`)."""
        return normalize_address(address) in self._current()

    def addresses(self) -> list[str]:
        """The addresses that have a password, sorted."""
        return sorted(self._current())

    def verify(self, address: str, password: str) -> bool:
        """True when ``password`` is the one of ``address``. Slow on purpose; run it off the event loop.

        Takes about the same time whether or not the address exists. On success, a hash made with
        weaker parameters than the current hasher's is replaced (when the store was built with
        ``rehash=True``). Raises CredentialsUnavailable when the file is unparsable.
        """
        address = normalize_address(address)
        stored = self._current().get(address)
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
