"""One send-bulk run: list the folder, skip what the journal says is done, submit the rest, count.

Kept apart from the command line so tests (and a laboratory's own scripts) can run it in-process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .compose import compose_report, prepare_eml
from .journal import Journal, Outcome
from .report import Summary
from .sender import Job, Server, send_all
from .sources import WorkItem, list_items


@dataclass(frozen=True)
class BulkRun:
    """What to send (``folder``, ``mapping``) as whom (``sender``, the APP address) to where (``server``)."""

    folder: Path
    sender: str
    server: Server
    mapping: Path | None = None
    connections: int = 4
    retries: int = 3
    backoff: Sequence[float] = (1.0, 5.0, 15.0)


def plan(run: BulkRun, journal: Journal) -> tuple[list[Job], int]:
    """The jobs still to do (only the recipients not yet settled for this content) and the count skipped."""
    jobs: list[Job] = []
    skipped = 0
    for item in list_items(run.folder, run.mapping):
        done = journal.done(item.key, item.sha256)
        pending = tuple(r for r in item.recipients if r.lower() not in done)
        if pending:
            jobs.append(Job(item.key, item.sha256, run.sender, pending, _loader(item, run.sender)))
        else:
            skipped += 1
    return jobs, skipped


def _loader(item: WorkItem, sender: str) -> Callable[[], bytes]:
    if item.subject is None:
        return lambda: prepare_eml(item.path.read_bytes())
    return lambda: compose_report(
        sender=sender, recipients=item.recipients, subject=item.subject or "", file_name=item.key,
        pdf=item.path.read_bytes(), sha256=item.sha256, now=datetime.now(UTC))


async def run_bulk(run: BulkRun, *, on_planned: Callable[[int], None] = lambda total: None,
                   on_outcome: Callable[[Outcome], None] = lambda outcome: None) -> Summary:
    """Send what remains of ``run.folder``; every outcome is journaled (fsync'd) before it is counted.

    Raises SourceError before any connection when the folder or mapping is wrong, JournalBusy when
    another run holds the folder, SubmissionError when the server cannot be used at all.
    """
    started = time.monotonic()
    summary = Summary()
    with Journal(run.folder) as journal:
        jobs, summary.skipped = plan(run, journal)
        on_planned(len(jobs))

        def settle(outcome: Outcome) -> None:
            journal.record(outcome)
            summary.add(outcome)
            on_outcome(outcome)

        if jobs:
            await send_all(run.server, jobs, settle, connections=run.connections, retries=run.retries,
                           backoff=run.backoff)
    summary.elapsed = time.monotonic() - started
    return summary
