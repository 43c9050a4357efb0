"""The annuaire in an LDAP directory (ldap3), for operators that run one (OpenLDAP, 389-DS, AD LDS).

ldap3 is synchronous: ``LdapDirectory`` does blocking calls on a small pool of bound connections
and ``LdapAnnuaire`` runs them on a thread pool so that the event loop never waits on the network.
TLS is mandatory (LDAPS, or StartTLS before the bind) and the directory's certificate is checked
against the configured CA and the host name. Any failure to get an answer in time becomes
``AnnuaireUnavailable``: callers answer 4xx (451 4.4.3, NO [UNAVAILABLE]), never a permanent refusal.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ldap3 import AUTO_BIND_NO_TLS, AUTO_BIND_TLS_BEFORE_BIND, NONE, SUBTREE, SYNC, Connection, Server, Tls
from ldap3.core.exceptions import LDAPCommunicationError, LDAPException

from mssante_base.annuaire import Annuaire, AnnuaireUnavailable, MailboxEntry, search_text
from mssante_base.annuaire import ldap_mapping as mapping
from mssante_base.annuaire.settings import AnnuaireSettings, LdapAttributes

log = logging.getLogger(__name__)

T = TypeVar("T")

_SUCCESS = 0
_SIZE_LIMIT_EXCEEDED = 4
_NO_SUCH_OBJECT = 32
_BATCH = 200  # addresses per OR-filter when reading many entries


@dataclass(frozen=True)
class LdapOptions:
    """Everything needed to reach and read (or write) the directory."""

    url: str
    base_dn: str
    bind_dn: str = ""
    bind_password: str = ""
    ca_file: Path | None = None
    object_classes: tuple[str, ...] = ("inetOrgPerson", "mssanteMailbox")
    filter: str = "(objectClass=mssanteMailbox)"
    timeout: float = 5.0
    pool_size: int = 4
    attributes: LdapAttributes = field(default_factory=LdapAttributes)

    @classmethod
    def from_settings(cls, section: AnnuaireSettings, home: Path, *, writer: bool = False) -> LdapOptions:
        """Options of [annuaire] (relative paths from HOME); ``writer`` uses the import identity when one is
        configured."""
        bind_dn, password, password_file = section.bind_dn, section.bind_password, section.bind_password_file
        if writer and section.import_bind_dn:
            bind_dn = section.import_bind_dn
            password, password_file = section.import_bind_password, section.import_bind_password_file
        if password_file is not None:
            password = (home / password_file).read_text(encoding="utf-8").strip()
        return cls(
            url=section.url,
            base_dn=section.base_dn,
            bind_dn=bind_dn,
            bind_password=password,
            ca_file=home / section.ca_file if section.ca_file else None,
            object_classes=tuple(section.object_classes),
            filter=section.filter,
            timeout=section.timeout,
            pool_size=section.pool_size,
            attributes=section.attributes,
        )


class LdapDirectory:
    """Blocking, thread-safe reads and writes through a pool of at most ``pool_size`` connections."""

    def __init__(self, options: LdapOptions) -> None:
        self.options = options
        parts = urlsplit(options.url)
        self._ldaps = parts.scheme == "ldaps"
        self._host, self._port = parts.hostname or "", parts.port or (636 if self._ldaps else 389)
        self._idle: queue.SimpleQueue[Connection] = queue.SimpleQueue()
        self._slots = threading.BoundedSemaphore(options.pool_size)
        self._requested = mapping.requested_attributes(options.attributes)

    # -- connections -------------------------------------------------------------------------

    def _server(self) -> Server:
        """A fresh Server each time: ldap3 remembers an address that failed as unusable, for good."""
        tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(self.options.ca_file) if self.options.ca_file else None)
        return Server(self._host, port=self._port, use_ssl=self._ldaps, tls=tls,
                      connect_timeout=self.options.timeout, get_info=NONE)

    def _open(self) -> Connection:
        return Connection(
            self._server(),
            user=self.options.bind_dn or None,
            password=self.options.bind_password or None,
            auto_bind=AUTO_BIND_NO_TLS if self._ldaps else AUTO_BIND_TLS_BEFORE_BIND,
            receive_timeout=max(1, math.ceil(self.options.timeout)),  # ldap3 packs it as an integer
            client_strategy=SYNC,
            raise_exceptions=False,
        )

    def _run(self, operation: Callable[[Connection], T]) -> T:
        """Run ``operation`` on a pooled connection. A reused connection that fails at once (the
        directory restarted since) is replaced and the operation tried once more; a slow one is not."""
        if not self._slots.acquire(timeout=self.options.timeout):
            raise AnnuaireUnavailable(f"all {self.options.pool_size} directory connections are busy")
        try:
            for attempt in (1, 2):
                try:
                    conn, reused = self._idle.get_nowait(), True
                except queue.Empty:
                    conn, reused = self._connect(), False
                started = time.monotonic()
                try:
                    result = operation(conn)
                except LDAPCommunicationError as exc:
                    _close_quietly(conn)
                    quick = time.monotonic() - started < self.options.timeout / 2
                    if attempt == 1 and reused and quick:
                        continue
                    raise AnnuaireUnavailable(f"directory {self.options.url} did not answer: {exc}") from exc
                except BaseException:
                    _close_quietly(conn)
                    raise
                self._idle.put(conn)
                return result
            raise AssertionError("unreachable")
        finally:
            self._slots.release()

    def _connect(self) -> Connection:
        try:
            return self._open()
        except LDAPException as exc:
            raise AnnuaireUnavailable(f"directory {self.options.url} cannot be reached or bound: {exc}") from exc

    def close(self) -> None:
        while True:
            try:
                _close_quietly(self._idle.get_nowait())
            except queue.Empty:
                return

    # -- reads -------------------------------------------------------------------------------

    def find(self, condition: str, limit: int = 0) -> list[tuple[str, MailboxEntry]]:
        """(DN, entry) of the mailboxes matching ``condition`` (an already escaped filter)."""
        search_filter = mapping.all_of(self.options.filter, condition)

        def search(conn: Connection) -> list[tuple[str, MailboxEntry]]:
            conn.search(self.options.base_dn, search_filter, SUBTREE, attributes=self._requested,
                        size_limit=limit, time_limit=math.ceil(self.options.timeout))
            self._check(conn, allowed=(_SUCCESS, _SIZE_LIMIT_EXCEEDED))
            return self._entries(conn.response or [])

        return self._run(search)

    def _entries(self, response: Sequence[dict[str, Any]]) -> list[tuple[str, MailboxEntry]]:
        found = []
        for item in response:
            if item.get("type") != "searchResEntry":
                continue
            try:
                found.append((item["dn"], mapping.from_ldap(item["attributes"], self.options.attributes)))
            except ValueError as exc:
                log.warning("directory entry %s ignored: %s", item.get("dn"), exc)
        return found

    def get(self, address: str) -> MailboxEntry | None:
        """The entry whose address is exactly ``address`` (case-insensitive)."""
        wanted = address.strip().lower()
        matches = self.find(mapping.equality(self.options.attributes.address, wanted), limit=2)
        return next((entry for _, entry in matches if entry.address == wanted), None)

    def get_many(self, addresses: Sequence[str]) -> dict[str, tuple[str, MailboxEntry]]:
        """(DN, entry) by address, for the addresses that exist."""
        attribute = self.options.attributes.address
        found: dict[str, tuple[str, MailboxEntry]] = {}
        for start in range(0, len(addresses), _BATCH):
            chunk = addresses[start:start + _BATCH]
            for dn, entry in self.find(mapping.any_of(mapping.equality(attribute, a) for a in chunk)):
                found[entry.address] = (dn, entry)
        return found

    def entries_of_origin(self, origin: str) -> Iterator[tuple[str, str]]:
        """(DN, address) of every entry of one origin, page by page (constant memory)."""
        search_filter = mapping.all_of(self.options.filter, mapping.equality(self.options.attributes.origin, origin))
        conn = self._connect()
        try:
            pages = conn.extend.standard.paged_search(
                self.options.base_dn, search_filter, SUBTREE, attributes=[self.options.attributes.address],
                paged_size=500, generator=True,
            )
            for item in pages:
                if item.get("type") == "searchResEntry":
                    values = item["attributes"].get(self.options.attributes.address) or []
                    address = values[0] if isinstance(values, list) and values else values
                    yield item["dn"], str(address).lower()
        except LDAPException as exc:
            raise AnnuaireUnavailable(f"directory {self.options.url} failed during a listing: {exc}") from exc
        finally:
            _close_quietly(conn)

    # -- writes (annuaire import) --------------------------------------------------------------

    def add(self, entry: MailboxEntry) -> None:
        dn = mapping.entry_dn(entry.address, self.options.attributes, self.options.base_dn)
        values = {k: v for k, v in mapping.to_ldap(entry, self.options.attributes, self.options.object_classes).items()
                  if v}
        self._write(lambda conn: conn.add(dn, list(self.options.object_classes), values))

    def replace(self, dn: str, old: MailboxEntry, new: MailboxEntry) -> None:
        classes = self.options.object_classes
        delta = mapping.changes(mapping.to_ldap(old, self.options.attributes, classes),
                                mapping.to_ldap(new, self.options.attributes, classes))
        if delta:
            self._write(lambda conn: conn.modify(dn, {k: [("MODIFY_REPLACE", v)] for k, v in delta.items()}))

    def delete(self, dn: str) -> None:
        self._write(lambda conn: conn.delete(dn))

    def _write(self, operation: Callable[[Connection], object]) -> None:
        def run(conn: Connection) -> None:
            operation(conn)
            self._check(conn, allowed=(_SUCCESS,), permanent=True)

        self._run(run)

    @staticmethod
    def _check(conn: Connection, *, allowed: tuple[int, ...], permanent: bool = False) -> None:
        """Raise for an answer that is not one of ``allowed``: ValueError when the directory refused
        this one entry (``permanent``: a write with bad data), AnnuaireUnavailable otherwise."""
        result = conn.result or {}
        code = result.get("result", -1)
        if code in allowed:
            return
        text = f"{result.get('description', 'no answer')} ({code}) {result.get('message', '')}".strip()
        # 48-50: authentication/authorisation, 51-53: busy/unavailable/unwilling, 80: other
        if permanent and code not in (48, 49, 50, 51, 52, 53, 80, -1):
            raise ValueError(f"directory refused the entry: {text}")
        if code == _NO_SUCH_OBJECT:
            text = f"base DN not found: {text}"
        raise AnnuaireUnavailable(f"directory answered {text}")


def _close_quietly(conn: Connection) -> None:
    with suppress(LDAPException, OSError):
        conn.unbind()


class LdapAnnuaire(Annuaire):
    """The Annuaire interface over an LdapDirectory, off the event loop."""

    def __init__(self, directory: LdapDirectory) -> None:
        self.directory = directory
        self._executor = ThreadPoolExecutor(max_workers=directory.options.pool_size, thread_name_prefix="ldap")
        self._attributes = directory.options.attributes

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def lookup(self, address: str) -> MailboxEntry | None:
        return await self._call(self.directory.get, address)

    async def search(self, text: str, limit: int = 50) -> list[MailboxEntry]:
        attrs = self._attributes
        cleaned = search_text(text)
        if cleaned is None:
            return []
        pattern = f"*{mapping.escape(cleaned)}*"
        condition = mapping.all_of(
            f"(!({attrs.liste_rouge}=TRUE))",
            mapping.any_of([f"({attrs.display_name}={pattern})", f"({attrs.address}={pattern})"]),
        )
        found = await self._call(self.directory.find, condition, limit)
        return sorted((entry for _, entry in found if not entry.liste_rouge), key=lambda e: e.address)

    async def by_rpps(self, rpps: str) -> list[MailboxEntry]:
        found = await self._call(self.directory.find, mapping.equality(self._attributes.rpps, rpps.strip()))
        return sorted((entry for _, entry in found), key=lambda e: e.address)

    async def by_structure(self, structure_id: str) -> list[MailboxEntry]:
        condition = mapping.equality(self._attributes.structure_id, structure_id.strip())
        found = await self._call(self.directory.find, condition)
        return sorted((entry for _, entry in found), key=lambda e: e.address)

    async def delegated_to(self, address: str) -> list[MailboxEntry]:
        wanted = address.strip().lower()
        found = await self._call(self.directory.find, mapping.equality(self._attributes.delegates, wanted))
        return sorted((entry for _, entry in found if wanted in entry.delegates), key=lambda e: e.address)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.directory.close)
