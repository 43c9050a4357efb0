"""`mssante-operator conversation ls|end` on a demo kit, with conversations recorded through the store API."""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from stdnum.fr import nir
from support.harness import kit_store

from mssante_base.patients.conversations import ConversationAction, ConversationEvent
from mssante_operator.cli import main
from mssante_operator.demo_kit import create_kit
from mssante_operator.store import Store

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
DOCTOR, CARDIO = "dr.martin@operateur.example", "cardiologie@operateur.example"
KEYS = ["patient_ins", "patient_address", "mailbox", "status", "opened_at", "opened_by", "opened_by_message_id",
        "ended_at", "ended_by", "ended_by_message_id"]  # fmt: skip


def ins(serial: int, department: str = "75") -> str:
    """A valid matricule INS; each test uses its own patients, the kit's store is shared by the module."""
    base = f"18001{department}{serial:06d}"
    return base + nir.calc_check_digits(base)


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("conversation-cli") / "home"
    create_kit(home)
    return home


@pytest.fixture
def store(kit: Path) -> Iterator[Store]:
    with kit_store(kit) as store:
        yield store


def opened(store: Store, patient: str, *mailboxes: str) -> None:
    store.conversations.record([
        ConversationEvent(patient, m, ConversationAction.OPEN, f"<{i}@operateur.example>", m, T0 + timedelta(minutes=i))
        for i, m in enumerate(mailboxes)
    ])  # fmt: skip


def run(kit: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["conversation", *args, "--home", str(kit)])


def lines(result: Result) -> list[dict[str, object]]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_ls_by_patient_prints_one_object_per_conversation(kit: Path, store: Store) -> None:
    patient = ins(1, "2A")
    opened(store, patient, DOCTOR, CARDIO)
    shown = lines(run(kit, "ls", "--patient", patient.lower()))  # 2a is the same INS as 2A
    assert [list(o) for o in shown] == [KEYS, KEYS]
    assert [(o["mailbox"], o["status"]) for o in shown] == [(CARDIO, "open"), (DOCTOR, "open")]
    assert shown[1]["patient_ins"] == patient and shown[1]["patient_address"] == f"{patient.lower()}@patient.mssante.fr"
    assert shown[1]["opened_at"] == "2026-01-05T09:00:00+00:00"
    assert (shown[1]["opened_by"], shown[1]["opened_by_message_id"]) == (DOCTOR, "<0@operateur.example>")
    assert shown[1]["ended_at"] is None and shown[1]["ended_by"] is None


def test_ls_by_mailbox_with_history(kit: Path, store: Store) -> None:
    first, second = ins(2), ins(3)
    mailbox = "pediatrie@operateur.example"
    opened(store, first, mailbox)
    opened(store, second, mailbox)
    store.conversations.record([ConversationEvent(second, mailbox, ConversationAction.END, "<fin@operateur.example>",
                                                  mailbox, T0 + timedelta(hours=1))])  # fmt: skip
    shown = lines(run(kit, "ls", "--mailbox", "Pediatrie@Operateur.example", "--history"))
    assert [(o["patient_ins"], o["status"]) for o in shown] == [(first, "open"), (second, "ended")]
    assert shown[1]["history"] == [
        {"action": "open", "message_id": "<0@operateur.example>", "actor": mailbox, "at": "2026-01-05T09:00:00+00:00"},
        {"action": "end", "message_id": "<fin@operateur.example>", "actor": mailbox,
         "at": "2026-01-05T10:00:00+00:00"},
    ]  # fmt: skip
    assert "history" not in lines(run(kit, "ls", "--mailbox", mailbox))[0]


def test_ls_with_nothing_to_show(kit: Path, store: Store) -> None:
    result = run(kit, "ls", "--mailbox", "personne@operateur.example")
    assert result.exit_code == 0 and result.stdout == ""
    assert "no conversation for personne@operateur.example" in result.stderr


def test_ls_needs_exactly_one_of_patient_and_mailbox(kit: Path) -> None:
    for args in ([], ["--patient", ins(4), "--mailbox", DOCTOR]):
        result = run(kit, "ls", *args)
        assert result.exit_code == 2 and "give either --patient or --mailbox" in result.stderr


def test_an_invalid_ins_is_a_usage_error_that_says_why(kit: Path) -> None:
    wrong_key = ins(5)[:-2] + "00"
    result = run(kit, "ls", "--patient", wrong_key)
    assert result.exit_code == 2 and "the key (last two digits) of the matricule INS is wrong" in result.stderr
    result = run(kit, "end", "--patient", "12345", "--mailbox", DOCTOR)
    assert result.exit_code == 2 and "a matricule INS has 15 characters, not 5" in result.stderr


def test_end_by_an_operator(kit: Path, store: Store) -> None:
    patient = ins(6)
    opened(store, patient, DOCTOR)
    [shown] = lines(run(kit, "end", "--patient", patient, "--mailbox", DOCTOR, "--by", "alice"))
    assert (shown["status"], shown["ended_by"], shown["ended_by_message_id"]) == ("ended", "operator:alice", None)
    assert datetime.fromisoformat(str(shown["ended_at"])) > T0
    [again] = lines(run(kit, "end", "--patient", patient, "--mailbox", DOCTOR))  # already ended: unchanged
    assert again == shown
    assert [e.actor for e in store.conversations.history(patient, DOCTOR)] == [DOCTOR, "operator:alice"]
    opened(store, patient, CARDIO)
    [by_default] = lines(run(kit, "end", "--patient", patient, "--mailbox", CARDIO))
    assert by_default["ended_by"] == f"operator:{getpass.getuser()}"


def test_end_of_an_unknown_conversation_fails(kit: Path) -> None:
    patient = ins(7)
    result = run(kit, "end", "--patient", patient, "--mailbox", DOCTOR)
    assert result.exit_code == 1 and f"no conversation between patient {patient} and {DOCTOR}" in result.stderr
