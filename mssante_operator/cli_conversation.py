"""``mssante-operator conversation ls|end``: patients' conversations with professional mailboxes."""

from __future__ import annotations

import getpass
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mssante_base.cli import HOME_OPTION

from .cli_common import with_store

if TYPE_CHECKING:
    from .store.conversations import ConversationRecord
    from .store.facade import Store


@click.group()
def conversation() -> None:
    """Patients' conversations: who may write to whom (the professional writes first); end one."""



PATIENT_OPTION = click.option("--patient", metavar="INS", help="The patient's matricule INS (15 characters).")


@conversation.command("ls")
@PATIENT_OPTION
@click.option("--mailbox", metavar="ADDRESS", help="A professional mailbox.")
@click.option("--history", is_flag=True, help="Add each conversation's opens and ends, oldest first.")
@HOME_OPTION
def conversation_ls(patient: str | None, mailbox: str | None, history: bool, home: Path) -> None:
    """The conversations of a patient or of a mailbox, one JSON object per line."""
    if (patient is None) == (mailbox is None):
        raise click.UsageError("give either --patient or --mailbox")
    ins = None if patient is None else _ins(patient)

    def read(store: Store) -> list[dict[str, object]]:
        objects = []
        for record in store.conversations.ls(patient=ins, mailbox=mailbox):
            shown = _record_json(record)
            if history:
                shown["history"] = [
                    {"action": e.action.value, "message_id": e.message_id, "actor": e.actor, "at": _instant(e.at)}
                    for e in store.conversations.history(record.patient_ins, record.mailbox)
                ]
            objects.append(shown)
        return objects

    objects = with_store(home, read)
    for shown in objects:
        click.echo(json.dumps(shown, ensure_ascii=False))
    if not objects:
        click.echo(f"no conversation for {'patient ' + ins if ins else mailbox}", err=True)


@conversation.command("end")
@click.option("--patient", metavar="INS", required=True, help="The patient's matricule INS (15 characters).")
@click.option("--mailbox", metavar="ADDRESS", required=True, help="The professional mailbox.")
@click.option("--by", "name", help="Who ends it, for the audit trail (default: your user name).")
@HOME_OPTION
def conversation_end(patient: str, mailbox: str, name: str | None, home: Path) -> None:
    """End the conversation of a patient with a mailbox: the patient can no longer reply until it writes again."""
    from .store.conversations import ConversationNotFound

    ins, actor = _ins(patient), f"operator:{name or getpass.getuser()}"
    try:
        record = with_store(home, lambda store: store.conversations.end(ins, mailbox, actor=actor, at=store.now()))
    except ConversationNotFound as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo(json.dumps(_record_json(record), ensure_ascii=False))


def _ins(text: str) -> str:
    """The canonical INS, or a usage error saying what is wrong with it."""
    from mssante_base.patients.ins import InvalidIns, validate_ins

    try:
        return validate_ins(text).value
    except InvalidIns as exc:
        raise click.BadParameter(f"{text!r}: {exc}", param_hint="--patient") from exc


def _instant(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _record_json(record: ConversationRecord) -> dict[str, object]:
    return {
        "patient_ins": record.patient_ins, "patient_address": record.patient_address, "mailbox": record.mailbox,
        "status": record.status.value, "opened_at": _instant(record.opened_at), "opened_by": record.opened_by,
        "opened_by_message_id": record.opened_by_message_id, "ended_at": _instant(record.ended_at),
        "ended_by": record.ended_by, "ended_by_message_id": record.ended_by_message_id,
    }  # fmt: skip
