"""The embedded annuaire: a JSON file (``{"entries": [...]}``) read into memory.

It is the default for a demo kit and small operators. The file is re-read when it changes on disk
(checked at most once a second), so an import or an edit takes effect without a restart.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from mssante_base.annuaire import Annuaire, AnnuaireUnavailable, MailboxEntry, search_text

log = logging.getLogger(__name__)


def load_entries(path: Path) -> dict[str, MailboxEntry]:
    """Read the file into a dict keyed by lower-cased address; raises ValueError naming the entry."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise ValueError(f"{path}: expected an object with an 'entries' list")
    entries: dict[str, MailboxEntry] = {}
    for index, raw in enumerate(data["entries"]):
        try:
            entry = MailboxEntry.from_json(raw)
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path}: entries[{index}] is invalid: {exc!r}") from exc
        entries[entry.address] = entry
    return entries


def save_entries(path: Path, entries: list[MailboxEntry]) -> None:
    """Write entries atomically (temporary file, fsync, rename) so readers never see half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:  # one entry at a time: no second copy of the annuaire
        handle.write('{"entries": [')
        for index, entry in enumerate(entries):
            handle.write(",\n " if index else "\n ")
            handle.write(json.dumps(entry.to_json(), ensure_ascii=False))
        handle.write("\n]}\n")
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


class FileAnnuaire(Annuaire):
    """Annuaire backed by a JSON file, reloaded when its modification time changes."""

    def __init__(self, path: Path, *, check_interval: float = 1.0) -> None:
        self.path = path
        self._check_interval = check_interval
        self._entries: dict[str, MailboxEntry] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked_at = 0.0
        self._refresh(force=True)

    def _refresh(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked_at < self._check_interval:
            return
        self._checked_at = now
        try:
            stat = self.path.stat()
        except OSError as exc:
            if not self._entries:
                raise AnnuaireUnavailable(f"annuaire file {self.path} cannot be read: {exc}") from exc
            log.error("annuaire file %s cannot be read, keeping the loaded entries: %s", self.path, exc)
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        try:
            self._entries = load_entries(self.path)
        except (OSError, ValueError) as exc:
            if force and not self._entries:
                raise AnnuaireUnavailable(str(exc)) from exc
            log.error("annuaire file not reloaded, keeping the loaded entries: %s", exc)
            return
        self._stamp = stamp
        log.info("annuaire loaded from %s: %d mailboxes", self.path, len(self._entries))

    async def lookup(self, address: str) -> MailboxEntry | None:
        self._refresh()
        return self._entries.get(address.strip().lower())

    async def search(self, text: str, limit: int = 50) -> list[MailboxEntry]:
        self._refresh()
        cleaned = search_text(text)
        if cleaned is None:
            return []
        needle = cleaned.lower()
        found = (
            e for e in self._entries.values()
            if not e.liste_rouge and (needle in e.address or needle in e.display_name.lower())
        )
        return sorted(found, key=lambda e: e.address)[:limit]

    async def by_rpps(self, rpps: str) -> list[MailboxEntry]:
        self._refresh()
        wanted = rpps.strip().lower()
        return sorted((e for e in self._entries.values() if (e.rpps or "").lower() == wanted), key=lambda e: e.address)

    async def by_structure(self, structure_id: str) -> list[MailboxEntry]:
        self._refresh()
        wanted = structure_id.strip().lower()
        return sorted((e for e in self._entries.values() if (e.structure_id or "").lower() == wanted),
                      key=lambda e: e.address)

    async def delegated_to(self, address: str) -> list[MailboxEntry]:
        self._refresh()
        wanted = address.strip().lower()
        return sorted((e for e in self._entries.values() if wanted in e.delegates), key=lambda e: e.address)
