"""What a send-bulk run tells its caller: a one-line summary, a CSV of refusals, an exit status.

The CSV names files and recipients with the server's reply, never content or subjects, so it can be
handed to the laboratory's support without leaking health data.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from .journal import Outcome

EX_OK, EX_REFUSED, EX_TEMPFAIL = 0, 1, 75  # sysexits EX_TEMPFAIL: run it again later
REPORT_FILE = "send-bulk-report.csv"
REPORT_COLUMNS = ("file", "recipient", "code", "enhanced_code", "text", "kind")


@dataclass
class Summary:
    """Counts by message: each one is accepted, skipped, refused (some recipient for good) or temporary."""

    accepted: int = 0
    skipped: int = 0
    refused: int = 0
    temporary: int = 0
    elapsed: float = 0.0
    outcomes: list[Outcome] = field(default_factory=list)  # those with a refusal, for the CSV

    def add(self, outcome: Outcome) -> None:
        if outcome.temporary:
            self.temporary += 1
        elif outcome.permanent:
            self.refused += 1
        else:
            self.accepted += 1
        if outcome.refusals:
            self.outcomes.append(outcome)

    @property
    def exit_status(self) -> int:
        """75 while a re-run could still deliver something, else 1 if anything was refused, else 0."""
        if self.temporary:
            return EX_TEMPFAIL
        return EX_REFUSED if self.refused else EX_OK

    def text(self) -> str:
        rate = self.accepted / self.elapsed if self.elapsed > 0 else 0.0
        return (f"accepted {self.accepted}, skipped (already sent) {self.skipped}, "
                f"refused permanently {self.refused}, failed temporarily {self.temporary}; "
                f"{self.elapsed:.1f} s, {rate:.1f} msgs/s")


def write_report(path: Path, outcomes: list[Outcome]) -> int:
    """One row per refused recipient (``kind`` permanent or temporary), by file name; returns the row count."""
    rows = 0
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow(REPORT_COLUMNS)
        for outcome in sorted(outcomes, key=lambda o: o.key):
            for refusal in outcome.refusals:
                writer.writerow((outcome.key, refusal.recipient, refusal.code or "", refusal.enhanced,
                                 refusal.text, "temporary" if refusal.temporary else "permanent"))
                rows += 1
    return rows
