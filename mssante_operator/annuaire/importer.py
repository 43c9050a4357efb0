"""`annuaire import`: the national extraction (or our own JSON entries) into the backend, idempotently.

Rows are read as a stream and handled in batches: one read of the existing entries per batch,
then only the entries that changed are written. What this operator knows and the extraction
cannot (delegates of an ORG mailbox, liste rouge) is kept when an entry is updated. Entries that
are no longer in the extraction are removed only with ``prune``, and only those that an import
wrote (origin "extraction"): mailboxes entered locally are never touched.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mssante_base.annuaire import ORIGIN_EXTRACTION, AnnuaireUnavailable, MailboxEntry
from mssante_base.annuaire.factory import ldap_options
from mssante_base.annuaire.file_backend import load_entries, save_entries
from mssante_base.annuaire.ldap_backend import LdapDirectory, LdapOptions

from ..config import Settings
from .extraction import RowError

BATCH_SIZE = 500


@dataclass
class ImportCounts:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    removed: int = 0

    def summary(self) -> str:
        return (f"added {self.added}, updated {self.updated}, unchanged {self.unchanged}, "
                f"skipped {self.skipped}, removed {self.removed}")


@dataclass(frozen=True)
class WriteFailure:
    address: str
    reason: str


WriteResult = Callable[[], list[WriteFailure]]


class AnnuaireWriter(ABC):
    """What an import needs from a backend."""

    @abstractmethod
    def existing(self, addresses: list[str]) -> dict[str, MailboxEntry]:
        """The current entries among ``addresses``."""

    @abstractmethod
    def write(self, added: list[MailboxEntry], updated: list[tuple[MailboxEntry, MailboxEntry]]) -> WriteResult:
        """Start adding new entries and replacing (old, new) ones; the result, when called, waits
        for the writes and returns the entries the backend refused."""

    @abstractmethod
    def prune(self, keep: set[str]) -> int:
        """Remove imported entries whose address is not in ``keep``; returns how many."""

    def finish(self) -> None:  # noqa: B027 - only the file backend has something to flush
        """Make the import durable."""

    def close(self) -> None:  # noqa: B027
        """Release resources."""


def merge(existing: MailboxEntry | None, imported: MailboxEntry) -> MailboxEntry:
    """The imported entry; a row of the national extraction keeps the fields only this operator knows
    (an entry of our own JSON format carries them and replaces them)."""
    if existing is None or imported.origin != ORIGIN_EXTRACTION:
        return imported
    return dataclasses.replace(imported, delegates=existing.delegates, liste_rouge=existing.liste_rouge)


def run_import(
    items: Iterable[MailboxEntry | RowError],
    writer: AnnuaireWriter,
    *,
    prune: bool = False,
    on_error: Callable[[str], None] = lambda _message: None,
    on_progress: Callable[[int], None] = lambda _rows: None,
) -> ImportCounts:
    """Apply the extraction's rows to ``writer``; malformed rows are reported and skipped.

    One batch's writes run while the next batch is read and compared (a pipeline of depth one); a
    batch that holds an address still being written waits for that write, so the later row wins.
    """
    run = _ImportRun(writer, on_error, on_progress)
    seen: set[str] = set()
    for item in items:
        if isinstance(item, RowError):
            run.counts.skipped += 1
            on_error(f"line {item.line}: {item.reason}")
            on_progress(1)
            continue
        if prune:
            seen.add(item.address)
        run.add(item)
    run.flush()
    run.settle()
    if prune:
        run.counts.removed = writer.prune(seen)
    writer.finish()
    return run.counts


@dataclass
class _InFlight:
    addresses: set[str]
    result: WriteResult
    added: list[MailboxEntry]
    updated: list[MailboxEntry]


class _ImportRun:
    """The batches of one import, with at most one batch being written."""

    def __init__(self, writer: AnnuaireWriter, on_error: Callable[[str], None],
                 on_progress: Callable[[int], None]) -> None:
        self.writer, self.on_error, self.on_progress = writer, on_error, on_progress
        self.counts = ImportCounts()
        self.batch: dict[str, MailboxEntry] = {}
        self.in_flight: _InFlight | None = None

    def add(self, entry: MailboxEntry) -> None:
        if entry.address in self.batch:  # listed twice in one batch: the later row wins
            self.flush()
        self.batch[entry.address] = entry
        if len(self.batch) >= BATCH_SIZE:
            self.flush()

    def flush(self) -> None:
        if not self.batch:
            return
        if self.in_flight is not None and not self.in_flight.addresses.isdisjoint(self.batch):
            self.settle()
        current = self.writer.existing(list(self.batch))
        added: list[MailboxEntry] = []
        updated: list[tuple[MailboxEntry, MailboxEntry]] = []
        for address, imported in self.batch.items():
            old = current.get(address)
            new = merge(old, imported)
            if old is None:
                added.append(new)
            elif old != new:
                updated.append((old, new))
            else:
                self.counts.unchanged += 1
        self.settle()
        self.in_flight = _InFlight(set(self.batch), self.writer.write(added, updated), added,
                                   [new for _, new in updated])
        self.on_progress(len(self.batch))
        self.batch = {}

    def settle(self) -> None:
        """Wait for the batch being written and count its outcome."""
        if self.in_flight is None:
            return
        done, self.in_flight = self.in_flight, None
        failures = done.result()
        failed = {f.address for f in failures}
        for failure in failures:
            self.on_error(f"{failure.address}: {failure.reason}")
        self.counts.added += sum(1 for e in done.added if e.address not in failed)
        self.counts.updated += sum(1 for e in done.updated if e.address not in failed)
        self.counts.skipped += len(failures)


class FileWriter(AnnuaireWriter):
    """The JSON file backend: edited in memory, written once, atomically, at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries = load_entries(path) if path.exists() else {}

    def existing(self, addresses: list[str]) -> dict[str, MailboxEntry]:
        return {a: self.entries[a] for a in addresses if a in self.entries}

    def write(self, added: list[MailboxEntry], updated: list[tuple[MailboxEntry, MailboxEntry]]) -> WriteResult:
        for entry in [*added, *(new for _, new in updated)]:
            self.entries[entry.address] = entry
        return list

    def prune(self, keep: set[str]) -> int:
        gone = [a for a, e in self.entries.items() if e.origin == ORIGIN_EXTRACTION and a not in keep]
        for address in gone:
            del self.entries[address]
        return len(gone)

    def finish(self) -> None:
        save_entries(self.path, list(self.entries.values()))


class LdapWriter(AnnuaireWriter):
    """The LDAP backend. Encoding LDAP requests in ldap3 (pyasn1) costs more CPU than the directory
    spends on them, so each batch's writes are spread over worker processes, each with its own
    connection; the reads (one OR-filter per 200 addresses) stay in this process."""

    def __init__(self, directory: LdapDirectory, processes: int | None = None) -> None:
        self.directory = directory
        self._dns: dict[str, str] = {}
        count = processes or directory.options.pool_size
        self._pool = ProcessPoolExecutor(
            max_workers=count, mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_write_worker, initargs=(directory.options,),
        )
        self._count = count

    def existing(self, addresses: list[str]) -> dict[str, MailboxEntry]:
        found = self.directory.get_many(addresses)
        self._dns = {address: dn for address, (dn, _) in found.items()}
        return {address: entry for address, (_, entry) in found.items()}

    def _spread(self, jobs: list[_Job]) -> WriteResult:
        shares = [jobs[i::self._count] for i in range(self._count)]
        futures = [self._pool.submit(_write_jobs, share) for share in shares if share]
        return lambda: [failure for future in futures for failure in future.result()]

    def write(self, added: list[MailboxEntry], updated: list[tuple[MailboxEntry, MailboxEntry]]) -> WriteResult:
        jobs: list[_Job] = [("add", e.address, e, None) for e in added]
        jobs += [("replace", self._dns[old.address], old, new) for old, new in updated]
        return self._spread(jobs)

    def prune(self, keep: set[str]) -> int:
        gone = [(dn, address) for dn, address in self.directory.entries_of_origin(ORIGIN_EXTRACTION)
                if address not in keep]
        for start in range(0, len(gone), BATCH_SIZE):
            failures = self._spread([("delete", dn, None, None) for dn, _ in gone[start:start + BATCH_SIZE]])()
            if failures:
                raise AnnuaireUnavailable(f"could not remove {failures[0].address}: {failures[0].reason}")
        return len(gone)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.directory.close()


# (operation, address or DN, entry, new entry): what a write worker process is asked to do
_Job = tuple[str, str, MailboxEntry | None, MailboxEntry | None]
_worker_directory: LdapDirectory | None = None


def _start_write_worker(options: LdapOptions) -> None:
    global _worker_directory
    _worker_directory = LdapDirectory(options)


def _write_jobs(jobs: list[_Job]) -> list[WriteFailure]:
    """In a write worker: run the jobs in order; an entry the directory refuses is a failure, not an abort."""
    assert _worker_directory is not None
    failures = []
    for operation, target, entry, new in jobs:
        try:
            if operation == "add" and entry is not None:
                _worker_directory.add(entry)
            elif operation == "replace" and entry is not None and new is not None:
                _worker_directory.replace(target, entry, new)
            else:
                _worker_directory.delete(target)
        except ValueError as exc:  # AnnuaireUnavailable is not a ValueError: it aborts the import
            failures.append(WriteFailure(new.address if new else entry.address if entry else target, str(exc)))
    return failures


def open_writer(settings: Settings) -> AnnuaireWriter:
    """The backend `annuaire import` writes into."""
    section = settings.annuaire
    if section.backend == "file":
        return FileWriter(settings.path(section.file))
    return LdapWriter(LdapDirectory(ldap_options(section, settings.home, writer=True)))
