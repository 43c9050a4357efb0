"""The ``mes-bridge`` command: run the bridge, look at its patients and their messages, send as a patient."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hashlib
import json
import logging
import mimetypes
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import click

from mssante_base.cli import HOME_OPTION, report_recipients  # HOME: the operator's; the bridge reads its [bridge] table
from mssante_base.errors import ConfigError
from mssante_base.logs import TEXT_FORMAT, use_log_format
from mssante_base.message.headers import summarise
from mssante_base.patients.codes import MIN_PASSWORD
from mssante_base.patients.ins import Ins, InvalidIns, validate_ins
from mssante_base.patients.states import PatientState
from mssante_base.settings import load_logging_settings

from .export import ExportRefused, write_export
from .lifecycle import Change, ChangeRefused
from .outgoing import BridgeSendError, PatientCannotSend, send_patient_message
from .service import open_store, seed_patients
from .settings import BridgeSettings, load_bridge_settings
from .store import (
    OVERRIDE_STATES,
    ActivationRefused,
    Audience,
    BridgeStore,
    DocumentNotFound,
    NewPatient,
    PatientNotFound,
    PatientRecord,
)

EX_UNAVAILABLE = 69  # sysexits.h: the operator cannot be reached
EX_TEMPFAIL = 75  # sysexits.h: try again later
EX_NOPERM = 77  # sysexits.h: this patient may not send


def _settings(home: Path) -> BridgeSettings:
    try:
        return load_bridge_settings(home)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _echo_json(value: dict) -> None:
    click.echo(json.dumps(value, ensure_ascii=False))


@click.group()
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def main(log_level: str) -> None:
    """mes_bridge: the patients' side (Mon espace santé) of the MSSanté operator."""
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr, format=TEXT_FORMAT)
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-line chatter
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its plug-in list at every start


@main.command()
@HOME_OPTION
def serve(home: Path) -> None:
    """Run the LMTP intake and the registry in the foreground until SIGTERM or SIGINT."""
    from .service import BridgeService

    settings = _settings(home)
    try:
        use_log_format(load_logging_settings(home).format)  # HOME's [logging], as the operator's
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        service = BridgeService(settings)
    except (OSError, ValueError, ConfigError) as exc:
        raise click.ClickException(f"cannot start: {exc}") from exc
    try:
        asyncio.run(service.run())
    except (OSError, ConfigError) as exc:
        raise click.ClickException(f"cannot start: {exc}") from exc


class InsParam(click.ParamType):
    """A matricule INS on the command line: a usage error says what is wrong with it."""

    name = "INS"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> Ins:
        if isinstance(value, Ins):
            return value
        try:
            return validate_ins(str(value))
        except InvalidIns as exc:
            self.fail(str(exc), param, ctx)


INS = InsParam()


@contextlib.contextmanager
def _store(home: Path) -> Iterator[BridgeStore]:
    """The bridge's store, patients.json's new patients added (as `serve` does at start: never overwriting)."""
    settings = _settings(home)
    store = open_store(settings)
    try:
        seed_patients(settings, store)
        yield store
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()


def _readable(store: BridgeStore, ins: Ins) -> None:
    """Refuse to show a deleted space's archive: no command reads it (only `purge` touches it)."""
    record = store.patient(ins)
    if record is not None and record.deleted_at is not None:
        raise click.ClickException(f"the space of INS {ins.value} was deleted at the person's request on "
                                   f"{record.deleted_at.date().isoformat()}: its archive is readable by no one")


@main.group()
def patients() -> None:
    """The patients' spaces the bridge knows."""


@patients.command("ls")
@HOME_OPTION
def patients_ls(home: Path) -> None:
    """One JSON object per line per patient (never a password hash)."""
    with _store(home) as store:
        for patient in store.patients():
            _echo_json({"ins": patient.ins, "address": Ins(patient.ins).address, "state": patient.state.value,
                        "given_name": patient.given_name, "family_name": patient.family_name,
                        "created_at": patient.created_at.isoformat(), "updated_at": patient.updated_at.isoformat()})


@patients.command("set-state")
@click.argument("ins", type=INS)
@click.argument("state", type=click.Choice(sorted(state.value for state in OVERRIDE_STATES)))
@HOME_OPTION
@click.option("--by", "by", default=None, help="Who makes the change (default: the system user).")
def patients_set_state(ins: Ins, state: str, home: Path, by: str | None) -> None:
    """Override the state of a known patient's space (audited; a deleted space stays deleted)."""
    _change_state(home, by, lambda store, actor: store.set_state(ins, PatientState(state), actor=actor))


@main.command()
@click.argument("ins", type=INS)
@HOME_OPTION
def inbox(ins: Ins, home: Path) -> None:
    """The messages a patient received, one JSON object per line, oldest first."""
    with _store(home) as store:
        _readable(store, ins)
        for record in store.messages(ins, "in"):
            summary = summarise(store.blobs.read(record.blob_key))
            _echo_json({"id": record.id, "message_id": record.message_id, "from": summary.from_text,
                        "subject": record.subject, "size": record.size, "received_at": record.at.isoformat()})


@main.command()
@HOME_OPTION
@click.option("--from", "sender", required=True, type=INS, help="The patient's INS.")
@click.option("--to", "recipients", required=True, multiple=True, help="A professional's address (repeatable).")
@click.option("--subject", required=True)
@click.option("--body", required=True)
@click.option("--attach", "attach", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A file to attach (repeatable).")
@click.option("--in-reply-to", default=None, help="The Message-ID this message answers.")
def send(home: Path, sender: Ins, recipients: tuple[str, ...], subject: str, body: str, attach: tuple[Path, ...],
         in_reply_to: str | None) -> None:
    """Send as a patient through the operator; one line per recipient.

    Exit status: 0 all accepted, 1 some (or all) refused, 75 temporary failure, 69 the operator cannot
    be reached, 77 the patient is unknown or their space is not active.
    """
    settings = _settings(home)
    attachments = [(path.name, path.read_bytes(), mimetypes.guess_type(path.name)[0] or "application/octet-stream")
                   for path in attach]
    try:
        with _store(home) as store:
            outcome = asyncio.run(send_patient_message(
                settings, ins=sender, to=recipients, subject=subject, body=body, attachments=attachments,
                in_reply_to=in_reply_to, store=store, actor=f"cli:{getpass.getuser()}",
            ))
    except PatientCannotSend as exc:
        click.echo(f"not sent: {exc}", err=True)
        sys.exit(EX_NOPERM)
    except BridgeSendError as exc:
        click.echo(f"not sent: {exc.reply}", err=True)
        sys.exit(EX_UNAVAILABLE if exc.unreachable else EX_TEMPFAIL if exc.temporary else 1)
    report_recipients(recipients, outcome.refused, outcome.message_id)


def _actor(by: str | None) -> str:
    return f"operator:{by or getpass.getuser()}"


BY_OPTION = click.option("--by", "by", default=None, help="Who does it (default: the system user).")


@main.group()
def patient() -> None:
    """One patient's space through its life: the code letter, activation or opposition, closure, deletion
    (every change audited)."""


def _echo_state(record: PatientRecord) -> None:
    value: dict[str, object] = {"ins": record.ins, "state": record.state.value,
                                "updated_at": record.updated_at.isoformat()}
    if record.window_ends_at is not None:
        value["window_ends_at"] = record.window_ends_at.isoformat()
    _echo_json(value)


@patient.command("create")
@click.argument("ins", type=INS)
@HOME_OPTION
@click.option("--given-name", default=None)
@click.option("--family-name", default=None)
@click.option("--birth-date", default=None, help="YYYY-MM-DD (required for a child).")
@click.option("--sex", type=click.Choice(["M", "F", "U"]), default=None)
@click.option("--email", default=None, help="Personal address for notifications.")
@click.option("--representative", "representatives", type=INS, multiple=True,
              help="A legal representative's INS (a parent; repeatable): makes this a child's space.")
@BY_OPTION
def patient_create(ins: Ins, home: Path, given_name: str | None, family_name: str | None, birth_date: str | None,
                   sex: str | None, email: str | None, representatives: tuple[Ins, ...], by: str | None) -> None:
    """The code letter: a pending space (opt-out window open) and its 12-character provisional code, printed
    only now. At the end of the window, without opposition, the space is created by default."""
    if birth_date is not None:
        try:
            date.fromisoformat(birth_date)
        except ValueError as exc:
            raise click.BadParameter(f"{birth_date!r} is not YYYY-MM-DD", param_hint="--birth-date") from exc
    new = NewPatient(ins, PatientState.PENDING, given_name, family_name, birth_date=birth_date, sex=sex,
                     email=email)
    with _store(home) as store:
        if representatives and (birth_date is None or not store.policy.represents(birth_date, date.today())):
            raise click.BadParameter("a child's space needs the birth date of a minor", param_hint="--birth-date")
        try:
            record, code = store.create_patient(new, actor=_actor(by), representatives=representatives)
        except (ValueError, PatientNotFound) as exc:
            raise click.ClickException(str(exc)) from exc
    _echo_json({"ins": record.ins, "state": record.state.value, "activation_code": code,
                "window_ends_at": record.window_ends_at.isoformat() if record.window_ends_at else None,
                "representatives": [parent.value for parent in representatives]})


@patient.command("new-code")
@click.argument("ins", type=INS)
@HOME_OPTION
@BY_OPTION
def patient_new_code(ins: Ins, home: Path, by: str | None) -> None:
    """A fresh provisional code for a space not active (the previous one stops working)."""
    with _store(home) as store:
        try:
            code = store.new_activation_code(ins, actor=_actor(by))
        except (PatientNotFound, ActivationRefused) as exc:
            raise click.ClickException(str(exc)) from exc
    _echo_json({"ins": ins.value, "activation_code": code})


@patient.command("activate")
@click.argument("ins", type=INS)
@HOME_OPTION
@click.option("--code", required=True, help="The 12-character provisional code.")
@click.option("--email", default=None, help="Personal address for notifications.")
@click.option("--password-stdin", is_flag=True, help="Read the new password from standard input.")
def patient_activate(ins: Ins, home: Path, code: str, email: str | None, password_stdin: bool) -> None:
    """Activate a space with its provisional code and a password (as the patient does on the web)."""
    from mssante_base.passwords import password_hasher

    password = (sys.stdin.readline().rstrip("\n") if password_stdin
                else click.prompt("New password", hide_input=True, confirmation_prompt=True))
    if len(password) < MIN_PASSWORD:
        raise click.ClickException(f"the password must have at least {MIN_PASSWORD} characters")
    with _store(home) as store:
        try:
            record = store.activate(ins.value, code, password_hash=password_hasher().hash(password), email=email,
                                    actor=f"patient:{ins.value}")
        except ActivationRefused as exc:
            raise click.ClickException(str(exc)) from exc
    _echo_json({"ins": record.ins, "state": record.state.value})


def _change_state(home: Path, by: str | None, apply: Callable[[BridgeStore, str], PatientRecord]) -> None:
    """Apply one audited change of a space's state (``apply(store, actor)``) and print the new state; the
    store's refusal, in words, otherwise."""
    with _store(home) as store:
        try:
            record = apply(store, _actor(by))
        except (PatientNotFound, ChangeRefused) as exc:
            raise click.ClickException(str(exc)) from exc
    _echo_state(record)


def _change(ins: Ins, home: Path, change: Change, by: str | None) -> None:
    _change_state(home, by, lambda store, actor: store.change(ins, change, actor=actor))


@patient.command("oppose")
@click.argument("ins", type=INS)
@HOME_OPTION
@BY_OPTION
def patient_oppose(ins: Ins, home: Path, by: str | None) -> None:
    """The person opposes the creation of their space (pending, or created by default and never activated)."""
    _change(ins, home, Change.OPPOSE, by)


@patient.command("close")
@click.argument("ins", type=INS)
@HOME_OPTION
@BY_OPTION
def patient_close(ins: Ins, home: Path, by: str | None) -> None:
    """Close a space: mail to it is refused from now on (a fresh code and activation reopen it)."""
    _change(ins, home, Change.CLOSE, by)


@patient.command("delete")
@click.argument("ins", type=INS)
@HOME_OPTION
@click.option("--by", "by", required=True, help="Who records the person's request (support agent).")
def patient_delete(ins: Ins, home: Path, by: str) -> None:
    """The person's request to delete their space: closed to everyone, its content archived and readable
    through no page or command, then destroyed by `purge` after `archive_retention`."""
    _change_state(home, by, lambda store, actor: store.delete_space(ins, actor=actor))


@patient.command("export")
@click.argument("ins", type=INS)
@HOME_OPTION
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The ZIP file to write (readable by its owner only).")
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@BY_OPTION
def patient_export(ins: Ins, home: Path, out: Path, force: bool, by: str | None) -> None:
    """The person's right to get everything back: one ZIP of every message (.eml), every document they may
    see with its metadata, the history (JSON and HTML) and a manifest of hashes (audited; not for a deleted
    space)."""
    if out.exists() and not force:
        raise click.ClickException(f"{out} exists: choose another file or add --force")
    try:
        descriptor, temporary = tempfile.mkstemp(dir=out.parent, prefix=".mes-export-", suffix=".zip")  # mode 0600
    except OSError as exc:
        raise click.ClickException(f"cannot write in {out.parent}: {exc.strerror}") from exc
    try:
        with os.fdopen(descriptor, "w+b") as file, _store(home) as store:
            summary = write_export(store, ins.value, Audience.PATIENT, file, actor=_actor(by))
            file.flush()
            os.fsync(file.fileno())
            file.seek(0)
            digest = hashlib.file_digest(file, "sha256").hexdigest()
        if force:
            os.replace(temporary, out)
        else:
            os.link(temporary, out)  # never over a file that appeared meanwhile
            os.unlink(temporary)
    except ExportRefused as exc:
        raise click.ClickException(str(exc)) from exc
    except FileExistsError as exc:
        raise click.ClickException(f"{out} exists: choose another file or add --force") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    _echo_json({"path": str(out), "messages": summary.messages, "documents": summary.documents,
                "history": summary.history, "sha256": digest})


@main.command()
@HOME_OPTION
@BY_OPTION
def purge(home: Path, by: str | None) -> None:
    """Destroy the archives of spaces deleted longer than `archive_retention` ago (the audit trail stays)."""
    with _store(home) as store:
        purged = store.purge(actor=_actor(by))
    _echo_json({"purged": purged})


@main.command("lifecycle")
@HOME_OPTION
def lifecycle_run(home: Path) -> None:
    """Run the spaces' lifecycle once, as `serve` does every `lifecycle_interval`: spaces whose opt-out window
    ended are created by default, archives past retention are purged."""
    with _store(home) as store:
        created = store.end_windows()
        purged = store.purge()
    _echo_json({"created_by_default": created, "purged": purged})


@main.group()
def audit() -> None:
    """The append-only, hash-chained audit log."""


@audit.command("verify")
@HOME_OPTION
def audit_verify(home: Path) -> None:
    """Recompute the whole chain; exit 1 and name the first bad entry when it does not hold."""
    with _store(home) as store:
        report = store.verify_chain()
    _echo_json({"entries": report.entries, "ok": report.ok, "first_bad": report.first_bad, "reason": report.reason})
    if not report.ok:
        sys.exit(1)


@audit.command("ls")
@click.argument("ins", type=INS, required=False)
@HOME_OPTION
def audit_ls(ins: Ins | None, home: Path) -> None:
    """The entries (of one patient), oldest first, one JSON object per line."""
    with _store(home) as store:
        for entry in store.audit(ins):
            _echo_json({"id": entry.id, "at": entry.at.isoformat(), "actor": entry.actor, "action": entry.action,
                        "ins": entry.ins, "detail": entry.detail, "hash": entry.hash})


@main.command()
@click.option("--ins", "ins", type=INS, default=None, help="Only this patient's.")
@HOME_OPTION
def notifications(ins: Ins | None, home: Path) -> None:
    """The notification outbox (what goes to patients' personal addresses), oldest first."""
    with _store(home) as store:
        for notice in store.notifications(ins.value if ins is not None else None):
            _echo_json({"id": notice.id, "ins": notice.ins, "email": notice.email, "kind": notice.kind,
                        "subject": notice.subject, "body": notice.body, "created_at": notice.created_at.isoformat()})


@main.group()
def documents() -> None:
    """A patient's dossier."""


@documents.command("ls")
@click.argument("ins", type=INS)
@HOME_OPTION
def documents_ls(ins: Ins, home: Path) -> None:
    """Every document, hidden ones included, oldest first (titles are health data: operators only)."""
    with _store(home) as store:
        _readable(store, ins)
        for doc in store.all_documents(ins.value):
            _echo_json({"id": doc.id, "title": doc.title, "category": doc.category.value,
                        "mime_type": doc.mime_type, "size": doc.size, "deposited_at": doc.deposited_at.isoformat(),
                        "deposited_by": doc.deposited_by, "message": doc.message,
                        "masked_from_professionals": doc.masked_from_professionals,
                        "hidden_from_patient": doc.hidden_from_patient})


@documents.command("release")
@click.argument("ins", type=INS)
@click.argument("document_id", type=int)
@HOME_OPTION
@BY_OPTION
def documents_release(ins: Ins, document_id: int, home: Path, by: str | None) -> None:
    """Make visible to the patient a document sent INVISIBLE_PATIENT (after the announcement consultation)."""
    with _store(home) as store:
        _readable(store, ins)
        try:
            doc = store.release(ins.value, document_id, actor=_actor(by))
        except DocumentNotFound as exc:
            raise click.ClickException(str(exc)) from exc
    _echo_json({"id": doc.id, "hidden_from_patient": doc.hidden_from_patient})
