"""The same annuaire behaviour on both backends: the JSON file and a real slapd, loaded by `annuaire import`.

The LDAP variant starts OpenLDAP on loopback with the shipped schema, points the demo kit's
[annuaire] at it, and loads the kit's own mailboxes (liste rouge, delegates) and an extraction
file through the import command, as an operator would.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from support.extraction_data import row_line, write_extraction
from support.harness import make_kit, read_json
from support.slapd import Slapd, start_slapd

from mssante_base.annuaire import BalKind
from mssante_base.annuaire.factory import open_annuaire
from mssante_operator.cli import main
from mssante_operator.config import load_settings

DOMAIN = "hopital-demo.mssante.fr"
DOCTOR = f"dr.martin@{DOMAIN}"
SECRETARY = f"ines.secretaire@{DOMAIN}"
RED_LISTED = f"paul.durand@{DOMAIN}"
SERVICE = f"cardiologie@{DOMAIN}"
LAB_APP = f"labo-auto@{DOMAIN}"
PHARMACY = f"pharmacie.centrale@{DOMAIN}"


@dataclass
class Directory:
    home: Path
    backend: str
    slapd: Slapd | None

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(main, [*args, "--home", str(self.home)], catch_exceptions=False)

    def ask(self, method: str, *args: Any) -> Any:
        async def question() -> Any:
            settings = load_settings(self.home)
            annuaire = open_annuaire(settings.annuaire, settings.home)
            try:
                return await getattr(annuaire, method)(*args)
            finally:
                await annuaire.close()

        return asyncio.run(question())


def ldap_settings(server: Slapd, **extra: Any) -> dict[str, Any]:
    return {
        "backend": "ldap", "url": server.url, "ca_file": str(server.ca_file), "base_dn": server.base_dn,
        "bind_dn": server.reader_dn, "bind_password": server.reader_password,
        "import_bind_dn": server.admin_dn, "import_bind_password": server.admin_password, "timeout": "2s", **extra,
    }


@pytest.fixture(params=["file", "ldap"])
def directory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Directory]:
    home = tmp_path / "kit"
    if request.param == "file":
        make_kit(home)
        yield Directory(home, "file", None)
        return
    server = start_slapd(tmp_path / "slapd")
    try:
        make_kit(home, annuaire=ldap_settings(server))
        result = CliRunner().invoke(main, ["annuaire", "import", str(home / "annuaire.json"), "--home", str(home)])
        assert result.exit_code == 0, result.output
        entries = read_json(home / "annuaire.json")["entries"]
        assert f"added {len(entries)}," in result.output
        yield Directory(home, "ldap", server)
    finally:
        server.stop()


def extraction(tmp_path: Path, *lines: str, as_zip: bool = False) -> Path:
    return write_extraction(tmp_path / ("extraction.zip" if as_zip else "extraction.txt"), lines, as_zip=as_zip)


NEW_DOCTORS = [
    row_line("PER", f"dr.new{n}@clinique-ouest.mssante.fr", rpps=f"8100000000{n}", first_name="Alex",
             last_name=f"Nouveau{n}", profession_code="10", profession_label="Médecin")
    for n in range(3)
]


# --- resolution -------------------------------------------------------------------------------


def test_each_bal_type_resolves(directory: Directory) -> None:
    doctor = directory.ask("lookup", DOCTOR.upper())
    assert doctor.kind is BalKind.PER and doctor.rpps == "10001234567"
    service = directory.ask("lookup", SERVICE)
    assert service.kind is BalKind.ORG and set(service.delegates) == {DOCTOR, SECRETARY}
    lab = directory.ask("lookup", LAB_APP)
    assert lab.kind is BalKind.APP and not lab.can_receive
    assert directory.ask("lookup", PHARMACY).pharmacy
    assert directory.ask("lookup", f"nobody@{DOMAIN}") is None


def test_liste_rouge_resolves_but_is_never_found_by_a_search(directory: Directory) -> None:
    assert directory.ask("lookup", RED_LISTED).liste_rouge
    assert [e.address for e in directory.ask("by_rpps", "10005550123")] == [RED_LISTED]
    assert RED_LISTED not in [e.address for e in directory.ask("search", "durand")]
    assert RED_LISTED not in [e.address for e in directory.ask("search", DOMAIN)]
    assert DOCTOR in [e.address for e in directory.ask("search", "martin")]


def test_delegates_and_rpps_map_to_mailboxes(directory: Directory) -> None:
    assert [e.address for e in directory.ask("delegated_to", SECRETARY)] == [SERVICE]
    assert directory.ask("delegated_to", LAB_APP) == []
    assert [e.address for e in directory.ask("by_rpps", "10001234567")] == [DOCTOR]
    lab = directory.ask("lookup", LAB_APP)
    assert LAB_APP in [e.address for e in directory.ask("by_structure", lab.structure_id)]


@pytest.mark.parametrize("hostile", ["*", f"*@{DOMAIN}", f"dr.martin@{DOMAIN})(mail=*", "(", ")", "\\", "\x00",
                                     f"dr.martin\x00@{DOMAIN}", f"*)(|(mail=*@{DOMAIN}"])
def test_hostile_values_match_nothing(directory: Directory, hostile: str) -> None:
    assert directory.ask("lookup", hostile) is None
    assert directory.ask("by_rpps", hostile) == []
    assert directory.ask("by_structure", hostile) == []
    assert directory.ask("delegated_to", hostile) == []
    assert directory.ask("search", hostile) == []


def test_non_ascii_addresses_round_trip(directory: Directory, tmp_path: Path) -> None:
    address = "hélène.lefèvre@hôpital-nord.mssante.fr"
    result = directory.cli("annuaire", "import", str(extraction(tmp_path, row_line("PER", address, rpps="81099"))))
    assert result.exit_code == 0, result.output
    assert directory.ask("lookup", "HÉLÈNE.LEFÈVRE@hôpital-nord.mssante.fr").address == address


# --- import -----------------------------------------------------------------------------------


def test_import_counts_and_is_idempotent(directory: Directory, tmp_path: Path) -> None:
    file = extraction(tmp_path, *NEW_DOCTORS)
    assert directory.cli("annuaire", "import", str(file)).output.strip().endswith(
        "added 3, updated 0, unchanged 0, skipped 0, removed 0")
    assert directory.cli("annuaire", "import", str(file)).output.strip().endswith(
        "added 0, updated 0, unchanged 3, skipped 0, removed 0")
    changed = extraction(tmp_path, *NEW_DOCTORS[:2], NEW_DOCTORS[2].replace("Médecin", "Médecin généraliste"))
    assert directory.cli("annuaire", "import", str(changed)).output.strip().endswith(
        "added 0, updated 1, unchanged 2, skipped 0, removed 0")
    entry = directory.ask("lookup", "dr.new2@clinique-ouest.mssante.fr")
    assert entry.profession_label == "Médecin généraliste" and entry.origin == "extraction"


def test_malformed_rows_are_reported_with_their_line_and_skipped(directory: Directory, tmp_path: Path) -> None:
    file = extraction(tmp_path, NEW_DOCTORS[0], "PER|broken|row", row_line("XYZ", "a@b.mssante.fr"), NEW_DOCTORS[1])
    result = CliRunner().invoke(main, ["annuaire", "import", str(file), "--home", str(directory.home)])
    assert result.exit_code == 0
    assert "line 3: expected 31 columns, found 3" in result.stderr
    assert "line 4:" in result.stderr
    assert result.stdout.strip() == "added 2, updated 0, unchanged 0, skipped 2, removed 0"


def test_a_zip_extraction_imports(directory: Directory, tmp_path: Path) -> None:
    result = directory.cli("annuaire", "import", str(extraction(tmp_path, *NEW_DOCTORS, as_zip=True)))
    assert result.output.strip().endswith("added 3, updated 0, unchanged 0, skipped 0, removed 0")


def test_prune_removes_only_imported_mailboxes_that_disappeared(directory: Directory, tmp_path: Path) -> None:
    directory.cli("annuaire", "import", str(extraction(tmp_path, *NEW_DOCTORS)))
    smaller = extraction(tmp_path, NEW_DOCTORS[0])
    kept = directory.cli("annuaire", "import", str(smaller))
    assert kept.output.strip().endswith("removed 0")  # without --prune nothing goes
    assert directory.ask("lookup", "dr.new1@clinique-ouest.mssante.fr") is not None
    pruned = directory.cli("annuaire", "import", str(smaller), "--prune")
    assert pruned.output.strip().endswith("unchanged 1, skipped 0, removed 2")
    assert directory.ask("lookup", "dr.new1@clinique-ouest.mssante.fr") is None
    assert directory.ask("lookup", DOCTOR) is not None  # the kit's own mailboxes are local: never pruned


def test_an_update_from_the_extraction_keeps_delegates_and_liste_rouge(directory: Directory, tmp_path: Path) -> None:
    rows = [row_line("ORG", SERVICE, structure_id="1750000000", service="Cardiologie et rythmologie"),
            row_line("PER", RED_LISTED, rpps="10005550123", first_name="Paul", last_name="Durand")]
    result = directory.cli("annuaire", "import", str(extraction(tmp_path, *rows)))
    assert result.output.strip().endswith("added 0, updated 2, unchanged 0, skipped 0, removed 0")
    service = directory.ask("lookup", SERVICE)
    assert service.display_name == "Cardiologie et rythmologie" and set(service.delegates) == {DOCTOR, SECRETARY}
    assert directory.ask("lookup", RED_LISTED).liste_rouge


def test_a_file_that_is_not_an_extraction_is_refused_whole(directory: Directory, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.txt"
    bogus.write_text("name|mail\nx|y\n", encoding="utf-8")
    result = directory.cli("annuaire", "import", str(bogus))
    assert result.exit_code != 0 and "cannot import" in result.output


# --- show / search ----------------------------------------------------------------------------


def test_show_prints_the_entry_as_json(directory: Directory) -> None:
    result = directory.cli("annuaire", "show", SERVICE)
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["kind"] == "ORG" and sorted(data["delegates"]) == [DOCTOR, SECRETARY]
    missing = directory.cli("annuaire", "show", f"nobody@{DOMAIN}")
    assert missing.exit_code == 1 and "no such mailbox" in missing.output


def test_search_lists_published_mailboxes_only(directory: Directory) -> None:
    result = directory.cli("annuaire", "search", DOMAIN)
    addresses = {json.loads(line)["address"] for line in result.output.splitlines()}
    assert DOCTOR in addresses and SERVICE in addresses and RED_LISTED not in addresses


def test_the_progress_bar_counts_rows(tmp_path: Path) -> None:
    home = tmp_path / "kit"
    make_kit(home)
    file = extraction(tmp_path, *NEW_DOCTORS)
    result = CliRunner().invoke(main, ["annuaire", "import", str(file), "--home", str(home), "--progress"])
    assert result.exit_code == 0
    assert "3/3" in result.stderr and "rows" in result.stderr
