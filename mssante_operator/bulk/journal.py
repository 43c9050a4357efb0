"""The resumable state of a send-bulk folder: an append-only JSON-lines journal beside the files.

One line per attempt outcome, written and fsync'd as soon as the server has answered, *before* the
next message is counted: after a crash the journal knows every recipient the server accepted (with
the queue id of its 250 reply) or refused for good, so a re-run sends only the rest. The state is
per recipient and per content (sha256): a corrected file, or a recipient added to the mapping, is
sent; a temporary refusal is tried again. A last line cut short by a crash is ignored.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

JOURNAL_FILE = ".send-bulk.journal"


class JournalBusy(RuntimeError):
    """Another send-bulk run holds this folder's journal."""


@dataclass(frozen=True)
class RefusedRecipient:
    """A recipient the server did not take; ``code`` 0 when no reply came (connection lost, timeout)."""

    recipient: str
    code: int
    enhanced: str
    text: str
    temporary: bool


@dataclass(frozen=True)
class Outcome:
    """What one attempt at one work item ended with."""

    key: str
    sha256: str
    accepted: tuple[str, ...] = ()
    refusals: tuple[RefusedRecipient, ...] = ()
    queue_id: str | None = None

    @property
    def permanent(self) -> tuple[RefusedRecipient, ...]:
        return tuple(r for r in self.refusals if not r.temporary)

    @property
    def temporary(self) -> tuple[RefusedRecipient, ...]:
        return tuple(r for r in self.refusals if r.temporary)


class Journal:
    """The journal of one folder, locked for the life of the object (one run per folder at a time)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / JOURNAL_FILE
        self._done: dict[tuple[str, str], set[str]] = {}
        self._handle: IO[str] = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._handle.close()
            raise JournalBusy(f"another send-bulk run is using {folder}") from None
        self._handle.seek(0)
        for line in self._handle:
            entry = _parse(line)
            if entry is not None:
                self._remember(entry)

    def done(self, key: str, sha256: str) -> set[str]:
        """Recipients (lower case) already accepted or refused for good for this content of ``key``."""
        return self._done.get((key, sha256), set())

    def record(self, outcome: Outcome) -> None:
        """Append ``outcome`` and make it durable before returning."""
        entry = {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "key": outcome.key,
            "sha256": outcome.sha256,
            "queue_id": outcome.queue_id,
            "accepted": list(outcome.accepted),
            "refused": [asdict(r) for r in outcome.refusals],
        }
        self._handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._remember(entry)

    def close(self) -> None:
        self._handle.close()  # closing releases the lock

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _remember(self, entry: dict[str, Any]) -> None:
        done = self._done.setdefault((entry["key"], entry["sha256"]), set())
        done.update(address.lower() for address in entry.get("accepted", ()))
        done.update(r["recipient"].lower() for r in entry.get("refused", ()) if not r.get("temporary"))


def _parse(line: str) -> dict[str, Any] | None:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError:
        return None  # the tail of a run killed mid-write
    return entry if isinstance(entry, dict) and "key" in entry and "sha256" in entry else None
