"""The import logic on its own: counts, merge of local fields, duplicates, and the one-batch pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from mssante_base.annuaire import ORIGIN_EXTRACTION, BalKind, MailboxEntry
from mssante_base.annuaire.file_backend import load_entries, save_entries
from mssante_operator.annuaire import importer
from mssante_operator.annuaire.extraction import RowError
from mssante_operator.annuaire.importer import FileWriter, merge, run_import


def imported(address: str, **fields: object) -> MailboxEntry:
    return MailboxEntry(address, BalKind.PER, origin=ORIGIN_EXTRACTION, **fields)  # type: ignore[arg-type]


def test_merge_keeps_what_only_this_operator_knows() -> None:
    local = MailboxEntry("org@x.fr", BalKind.ORG, liste_rouge=True, delegates=("a@x.fr",))
    row = MailboxEntry("org@x.fr", BalKind.ORG, display_name="Service", origin=ORIGIN_EXTRACTION)
    merged = merge(local, row)
    assert merged.display_name == "Service" and merged.liste_rouge and merged.delegates == ("a@x.fr",)
    own_json = MailboxEntry("org@x.fr", BalKind.ORG, delegates=("b@x.fr",))
    assert merge(local, own_json) == own_json  # our own JSON format carries those fields itself


def test_counts_errors_and_a_duplicate_address_across_batches(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importer, "BATCH_SIZE", 2)
    path = tmp_path / "annuaire.json"
    save_entries(path, [])
    errors: list[str] = []
    progress: list[int] = []
    rows = [
        imported("a@x.fr", display_name="A1"),
        imported("b@x.fr"),
        RowError(4, "expected 31 columns, found 3"),
        imported("c@x.fr"),
        imported("a@x.fr", display_name="A2"),  # listed again, two batches later: the later row wins
        imported("a@x.fr", display_name="A3"),  # and again in the same batch
    ]
    counts = run_import(rows, FileWriter(path), on_error=errors.append, on_progress=progress.append)
    assert (counts.added, counts.updated, counts.unchanged, counts.skipped) == (3, 2, 0, 1)
    assert errors == ["line 4: expected 31 columns, found 3"]
    assert sum(progress) == 6
    assert load_entries(path)["a@x.fr"].display_name == "A3"


def test_prune_spares_local_entries(tmp_path: Path) -> None:
    path = tmp_path / "annuaire.json"
    save_entries(path, [MailboxEntry("local@x.fr", BalKind.PER), imported("old@x.fr"), imported("kept@x.fr")])
    counts = run_import([imported("kept@x.fr")], FileWriter(path), prune=True)
    assert (counts.unchanged, counts.removed) == (1, 1)
    assert sorted(load_entries(path)) == ["kept@x.fr", "local@x.fr"]
