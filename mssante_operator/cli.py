"""The ``mssante-operator`` command: init, serve, mailbox ls (contract names, see ARCHITECTURE.md)."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

import click

from mssante_base.cli import HOME_OPTION, report_recipients
from mssante_base.errors import ConfigError
from mssante_base.logs import TEXT_FORMAT, use_log_format

from .cli_accounts import account
from .cli_common import EX_TEMPFAIL, annuaire_call, migrated_store, settings_of, with_store
from .cli_conversation import conversation
from .config import Settings

if TYPE_CHECKING:
    from datetime import datetime

    from .outcomes import Reply
    from .store.facade import Store
    from .store.queue import QueueEntry

T = TypeVar("T")

@click.group()
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.pass_context
def main(ctx: click.Context, log_level: str) -> None:
    """A secure health-messaging mail operator in the style of MSSanté."""
    ctx.obj = {"log_level": log_level.upper()}
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr, format=TEXT_FORMAT)
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-line chatter
    logging.getLogger("alembic").setLevel(logging.WARNING)


@main.command()
@click.argument("home", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace an existing kit (and its mail).")
def init(home: Path, force: bool) -> None:
    """Create a demo kit in HOME: config, certificates, liste blanche, annuaire, demo.json."""
    from .demo_kit import KitExistsError, create_kit

    try:
        manifest = create_kit(home, force=force)
    except KitExistsError as exc:
        raise click.ClickException(str(exc)) from exc
    listeners = ", ".join(f"{name} {v['host']}:{v['port']}" for name, v in manifest["listeners"].items())
    click.echo(f"demo kit written to {home.resolve()} ({listeners})")
    click.echo(f"start it with: {_this_command()} serve --home {home}")


def _this_command() -> str:
    """How to call this program again: its name when it is on PATH, else the venv's script by its path
    (a newcomer who has not activated the virtualenv can paste it as it is)."""
    import shutil

    if shutil.which("mssante-operator"):
        return "mssante-operator"
    script = Path(sys.executable).parent / "mssante-operator"
    return str(script) if script.exists() else f"{sys.executable} -m mssante_operator.cli"


@main.command()
@HOME_OPTION
@click.option("--worker", is_flag=True, hidden=True, help="Run as one worker of a supervisor.")
@click.option("--prepare", is_flag=True, hidden=True, help="Check the start-up files, migrate the store, exit.")
@click.pass_context
def serve(ctx: click.Context, home: Path, worker: bool, prepare: bool) -> None:
    """Run every service of HOME/config.toml in the foreground until SIGTERM or SIGINT.

    With [server] workers > 1 (0: one per CPU), a supervisor runs that many worker processes
    sharing the ports (bound once by the supervisor); SIGHUP reloads the liste blanche and the CRLs.
    With [bridge], the supervisor runs (even for one worker) to restart mes_bridge should it die.
    """
    settings = settings_of(home)
    use_log_format(settings.logging.format)  # the supervisor, each worker and --prepare alike
    count = settings.server.worker_count
    if (count > 1 or settings.bridge is not None) and not worker and not prepare:
        _supervise(settings, home, count, ctx.obj["log_level"])
    # Only now the application: the supervisor above never imports it (see workers.py).
    from mssante_base.listening import WorkerLoad

    from .app import Operator, check_start_up, prepare_store
    from .listening import inherited_listeners
    from .trust_space.downloads import download_stale

    try:
        if not worker:  # the supervisor's prepare child, or the single process: once per node and start
            download_stale(settings)
        if prepare:
            check_start_up(settings)  # fail here, once, on a bad certificate or liste blanche
            prepare_store(settings)
            return
        if worker:
            operator = Operator(settings, inherited=inherited_listeners(), load=WorkerLoad.inherited())
        else:
            prepare_store(settings)  # refuses here, with a clear message, a blob storage not the database's
            operator = Operator(settings)
    except (OSError, ValueError, ConfigError) as exc:
        raise click.ClickException(f"cannot start: {exc}") from exc
    asyncio.run(operator.serve_forever(prepare_store=False))


def _supervise(settings: Settings, home: Path, count: int, log_level: str) -> NoReturn:
    """The supervisor of ``count`` workers; exits with its status."""
    from .listening import bind_listeners
    from .workers import Supervisor, prepare_in_child

    status = prepare_in_child(home.resolve(), log_level)  # the child has said why on stderr
    if status:
        sys.exit(status)
    from .workers import bridge_argv

    companions = [bridge_argv(home.resolve())] if settings.bridge is not None else []
    try:
        sys.exit(Supervisor(home.resolve(), count, log_level, bind_listeners(settings), companions).run())
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot start: {exc}") from exc


@main.command()
@HOME_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (status, item, detail).")
@click.pass_context
def check(ctx: click.Context, home: Path, as_json: bool) -> None:
    """Check HOME: configuration, certificate, CRLs, liste blanche, DKIM key, store, annuaire, registry.

    One line per item, `ok|warn|fail  item  detail`; exit status 0 when nothing failed (warnings
    included), 1 otherwise: fit for cron or a monitoring probe. Reads only (no migration, no download).
    """
    from .health_check import run_checks

    if ctx.parent is not None and ctx.parent.get_parameter_source("log_level") is click.core.ParameterSource.DEFAULT:
        logging.getLogger().setLevel(logging.ERROR)  # the findings say it all; a cron job mails any stderr
    failed = False
    for finding in run_checks(home):
        click.echo(finding.json() if as_json else finding.line())
        failed = failed or finding.status == "fail"
    sys.exit(1 if failed else 0)


@main.group()
def mailbox() -> None:
    """Look into mailboxes."""


@mailbox.command("ls")
@click.argument("address")
@HOME_OPTION
def mailbox_ls(address: str, home: Path) -> None:
    """List the messages of ADDRESS's INBOX, one JSON object per line."""
    with migrated_store(home) as store:  # migrating is a no-op once `serve` has run; `ls` answers on a fresh kit
        for message in store.list_messages(address):
            click.echo(json.dumps({
                "uid": message.uid,
                "message_id": message.message_id or "",
                "from": message.from_addr,
                "subject": message.subject,
                "size": message.size,
                "received_at": message.received_at.isoformat(),
                "authentication_results": message.authentication_results,
            }, ensure_ascii=False))


def _is_json(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(64).lstrip().startswith(b"{")


@main.group()
def annuaire() -> None:
    """Import the national extraction, look mailboxes up."""


@annuaire.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@HOME_OPTION
@click.option("--prune", is_flag=True, help="Also remove imported mailboxes that are no longer in FILE.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
def annuaire_import(file: Path, home: Path, prune: bool, progress: bool | None) -> None:
    """Import FILE, the "Extraction Correspondance MSSanté" (.txt or its ZIP), into the annuaire.

    FILE may also be a JSON file in the file backend's format ({"entries": [...]}): this operator's
    own mailboxes, with liste rouge and delegates (never pruned). Idempotent: a second import of the
    same file changes nothing. Malformed rows are reported with their line number and skipped; the
    counts are printed at the end.
    """
    from tqdm import tqdm

    from mssante_base.annuaire import AnnuaireUnavailable
    from mssante_base.annuaire.cache import touch_stamp
    from mssante_base.annuaire.factory import stamp_path
    from mssante_base.annuaire.file_backend import load_entries

    from .annuaire.extraction import open_extraction, read_extraction
    from .annuaire.importer import open_writer, run_import

    settings = settings_of(home)
    local = _is_json(file)
    show_bar = sys.stderr.isatty() if progress is None else progress
    total: int | None = None
    try:
        if local:
            entries = list(load_entries(file).values())
            total = len(entries)
        elif show_bar:
            with open_extraction(file) as stream:
                total = max(sum(1 for _ in stream) - 1, 0)  # a quick first pass, for the bar's 100 %
        writer = open_writer(settings)
    except (OSError, ValueError, ConfigError) as exc:
        raise click.ClickException(f"cannot import {file}: {exc}") from exc
    bar = tqdm(total=total, unit=" rows", disable=not show_bar)
    try:
        with contextlib.nullcontext(None) if local else open_extraction(file) as stream:
            counts = run_import(
                entries if local else read_extraction(stream), writer, prune=prune and not local,
                on_error=lambda message: bar.write(f"skipped {message}", file=sys.stderr),
                on_progress=bar.update,
            )
    except ValueError as exc:  # a header that is not the extraction's
        raise click.ClickException(f"cannot import {file}: {exc}") from exc
    except AnnuaireUnavailable as exc:
        click.echo(f"import stopped, the annuaire is unavailable: {exc} (run it again: it is idempotent)", err=True)
        sys.exit(EX_TEMPFAIL)
    finally:
        bar.close()
        writer.close()
    touch_stamp(stamp_path(settings.home))
    logging.getLogger("mssante_operator.audit").info(
        "annuaire import file=%s backend=%s %s", file.name, settings.annuaire.backend, counts.summary())
    click.echo(counts.summary())


@annuaire.command("show")
@click.argument("address")
@HOME_OPTION
def annuaire_show(address: str, home: Path) -> None:
    """Print the annuaire entry of ADDRESS as JSON (liste rouge entries included: this is an operator's tool)."""
    entry = annuaire_call(settings_of(home), lambda directory: directory.lookup(address))
    if entry is None:
        click.echo(f"{address}: no such mailbox in the annuaire", err=True)
        sys.exit(1)
    click.echo(json.dumps(entry.to_json(), ensure_ascii=False, indent=2))


@annuaire.command("search")
@click.argument("text")
@HOME_OPTION
@click.option("--limit", default=50, show_default=True)
def annuaire_search(text: str, home: Path, limit: int) -> None:
    """Published mailboxes whose address or name contains TEXT, one JSON object per line (no liste rouge)."""
    for entry in annuaire_call(settings_of(home), lambda directory: directory.search(text, limit)):
        click.echo(json.dumps(entry.to_json(), ensure_ascii=False))


@main.group()
def queue() -> None:
    """Look into the outbound queue; retry or drop queued messages (also while `serve` runs)."""


QUEUE_STATUSES = ("scheduled", "deferred", "delivered", "failed")  # store.queue.RecipientStatus, not imported here


def _no_such_queue_id(queue_id: str) -> NoReturn:
    click.echo(f"{queue_id}: no such queued message", err=True)
    sys.exit(1)


def _queue_entry_json(entry: QueueEntry) -> dict[str, object]:
    def instant(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    return {
        "queue_id": entry.queue_id, "sender": entry.sender, "message_id": entry.message_id, "size": entry.size,
        "created_at": instant(entry.created_at), "expires_at": instant(entry.expires_at),
        "submitted_by": entry.submitted_by,
        "recipients": [
            {
                "address": r.address, "status": r.status.value, "attempts": r.attempts,
                "next_attempt_at": instant(r.next_attempt_at), "last_attempt_at": instant(r.last_attempt_at),
                "last_reply": r.last_reply.line if r.last_reply else "", "action": r.action,
                "leased_until": instant(r.leased_until),
                **_reply_json(r.last_reply),
            }
            for r in entry.recipients
        ],
    }  # fmt: skip


def _reply_json(reply: Reply | None) -> dict[str, object]:
    """The last reply's typed parts (null before the first attempt) beside its line."""
    if reply is None:
        return {"last_kind": None, "last_code": None, "last_enhanced": None, "last_text": None}
    return {"last_kind": reply.kind.value, "last_code": reply.code, "last_enhanced": reply.enhanced,
            "last_text": reply.text}


def _age(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    return f"{size / 1024:.1f} KB" if size < 1024 * 1024 else f"{size / 1024 / 1024:.1f} MB"


def _queue_entry_lines(entry: QueueEntry, now: datetime) -> list[str]:
    """A message line (id, age, size, sender), then one indented line per recipient."""
    lines = [f"{entry.queue_id:<16}  {_age((now - entry.created_at).total_seconds()):>7}  {_size(entry.size):>9}  "
             f"{entry.sender or '<>'}"]
    for r in entry.recipients:
        next_attempt = f", next {r.next_attempt_at:%Y-%m-%d %H:%M:%S}Z" if r.next_attempt_at else ""
        if r.leased_until is not None and r.leased_until > now:
            next_attempt = ", being tried now"
        reply = " ".join(r.last_reply.line.split())[:120] if r.last_reply else ""
        lines.append(f"    {r.address}  {r.status.value}, {r.attempts} attempt(s){next_attempt}"
                     + (f": {reply}" if reply else ""))
    return lines


@queue.command("ls")
@click.option("--status", type=click.Choice(QUEUE_STATUSES), help="Only messages with a recipient in this status.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line per message.")
@HOME_OPTION
def queue_ls(status: str | None, as_json: bool, home: Path) -> None:
    """List queued messages, oldest first, with each recipient's status, attempts, next attempt and last reply."""
    from .store.queue import RecipientStatus

    wanted = None if status is None else RecipientStatus(status)
    entries, now = with_store(home, lambda store: (store.queue.entries(status=wanted), store.now()))
    if as_json:
        for entry in entries:
            click.echo(json.dumps(_queue_entry_json(entry), ensure_ascii=False))
        return
    if not entries:
        click.echo("the queue is empty" if status is None else f"no queued message has a {status} recipient")
        return
    click.echo(f"{'QUEUE ID':<16}  {'AGE':>7}  {'SIZE':>9}  SENDER / RECIPIENTS")
    for entry in entries:
        click.echo("\n".join(_queue_entry_lines(entry, now)))


@queue.command("show")
@click.argument("queue_id")
@HOME_OPTION
def queue_show(queue_id: str, home: Path) -> None:
    """Print QUEUE_ID's message and every recipient's state as JSON (never the message's content)."""
    entry = with_store(home, lambda store: store.queue.show(queue_id))
    if entry is None:
        _no_such_queue_id(queue_id)
    click.echo(json.dumps(_queue_entry_json(entry), ensure_ascii=False, indent=2))


@queue.command("retry")
@click.argument("queue_id", required=False)
@click.option("--all", "every", is_flag=True, help="Every queued message.")
@HOME_OPTION
def queue_retry(queue_id: str | None, every: bool, home: Path) -> None:
    """Make the pending recipients of QUEUE_ID (or, with --all, of every message) due now."""
    from .store.queue import QueueEntryNotFound

    if (queue_id is None) != every:
        raise click.UsageError("give either a QUEUE_ID or --all")
    try:
        due = with_store(home, lambda store: store.queue.retry(queue_id, now=store.now()))
    except QueueEntryNotFound:
        _no_such_queue_id(str(queue_id))
    logging.getLogger("mssante_operator.audit").info(
        "queue retry queue_id=%s due=%d by=%s", queue_id or "all", due, getpass.getuser())
    click.echo(f"{due} recipient(s) due now")


@queue.command("drop")
@click.argument("queue_id")
@HOME_OPTION
def queue_drop(queue_id: str, home: Path) -> None:
    """Remove QUEUE_ID from the queue without sending any bounce (asks nothing: script with care)."""
    from .store.queue import QueueEntryNotFound

    def drop(store: Store) -> tuple[QueueEntry | None, int]:
        entry = store.queue.show(queue_id)
        return entry, 0 if entry is None else store.queue.drop(queue_id)

    try:
        entry, count = with_store(home, drop)
    except QueueEntryNotFound:  # dropped by someone else meanwhile
        entry = None
    if entry is None:
        _no_such_queue_id(queue_id)
    logging.getLogger("mssante_operator.audit").info(
        "queue drop queue_id=%s recipients=%d by=%s", queue_id, count, getpass.getuser())
    click.echo(f"dropped {queue_id}: from {entry.sender or '<>'} to {', '.join(r.address for r in entry.recipients)}"
               f" ({count} recipient(s), {_size(entry.size)}), no bounce sent")


@main.command("send-bulk")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--server", required=True, metavar="HOST:PORT", help="The operator's submission port.")
@click.option("--tls", "tls_mode", type=click.Choice(["starttls", "implicit"]), default="starttls",
              show_default=True, help="STARTTLS (587-style) or TLS from the first byte (465-style).")
@click.option("--cert", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The APP mailbox's certificate (PEM), presented for AUTH EXTERNAL.")
@click.option("--key", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--ca", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The trust CA that signs the server's certificate.")
@click.option("--from", "sender", required=True,
              help="The APP mailbox address (MAIL FROM, and From of composed reports).")
@click.option("--mapping", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV file;recipient;subject naming the PDFs of FOLDER (without it: FOLDER's *.eml files).")
@click.option("--connections", default=4, show_default=True, type=click.IntRange(1, 32))
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
              help="CSV of refusals (default: FOLDER/send-bulk-report.csv).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
def send_bulk(folder: Path, server: str, tls_mode: str, cert: Path, key: Path,
              ca: Path, sender: str, mapping: Path | None, connections: int, report: Path | None,
              progress: bool | None) -> None:
    """Submit every message of FOLDER from an APP mailbox, authenticated by its certificate.

    Resumable: a journal in FOLDER records what the server accepted, so running the command again
    sends only the rest. Exit status 0 when all was accepted, 1 when some recipient was refused for
    good (see the report), 75 when temporary failures remain (run it again later), 65 when FOLDER
    or the mapping is wrong (nothing sent), 78 when the server cannot be used as configured
    (certificate, CA, authentication).
    """
    import socket
    import ssl

    from tqdm import tqdm

    from mssante_base.trust.tls import client_context

    from .bulk.journal import JournalBusy
    from .bulk.report import REPORT_FILE, write_report
    from .bulk.runner import BulkRun, run_bulk
    from .bulk.sender import Server, SubmissionError
    from .bulk.sources import SourceError, is_address

    host, _, port = server.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter("expected HOST:PORT", param_hint="--server")
    if not is_address(sender):
        raise click.BadParameter(f"{sender!r} is not a mail address", param_hint="--from")
    try:
        context = client_context(cert, key, ca)
    except (OSError, ssl.SSLError) as exc:
        _stop(f"cannot use the certificate, key or CA: {exc}", EX_CONFIG)
    target = Server(host.strip("[]"), int(port), "implicit" if tls_mode == "implicit" else "starttls", context,
                    helo=socket.gethostname() or "send-bulk")
    bar = tqdm(unit=" msgs", disable=not (sys.stderr.isatty() if progress is None else progress))

    def planned(total: int) -> None:
        bar.total = total
        bar.refresh()

    run = BulkRun(folder, sender, target, mapping=mapping, connections=connections)
    try:
        summary = asyncio.run(run_bulk(run, on_planned=planned, on_outcome=lambda _: bar.update()))
    except SourceError as exc:
        _stop(str(exc), EX_DATAERR)
    except JournalBusy as exc:
        _stop(str(exc), EX_TEMPFAIL)
    except SubmissionError as exc:
        _stop(f"{exc} (nothing more was sent; run again once fixed)", EX_CONFIG)
    finally:
        bar.close()
    report_path = report or folder / REPORT_FILE
    rows = write_report(report_path, summary.outcomes)
    click.echo(summary.text())
    if rows:
        click.echo(f"{rows} refused recipient(s) listed in {report_path}")
    sys.exit(summary.exit_status)


EX_DATAERR, EX_CONFIG = 65, 78  # sysexits: bad input data; configuration (certificate, CA, server) to fix


def _stop(message: str, status: int) -> NoReturn:
    click.echo(f"send-bulk: {message}", err=True)
    sys.exit(status)


main.add_command(conversation)
main.add_command(account)


@main.group()
def demo() -> None:
    """Scenarios played against a running demo kit (`serve --home HOME` in another terminal)."""


@demo.command("patient")
@HOME_OPTION
def demo_patient(home: Path) -> None:
    """Doctor -> patient -> reply -> FIN -> refused -> reopened: each step and the operator's answer."""
    import smtplib

    from .demo_patient import StoryFailed, play

    try:
        play(home, click.echo)
    except StoryFailed as exc:
        raise click.ClickException(str(exc)) from exc
    except (OSError, smtplib.SMTPException) as exc:
        raise click.ClickException(f"cannot play the story (is `serve --home {home}` running?): {exc}") from exc


@demo.command("send")
@HOME_OPTION
@click.option("--as-peer", "peer", default=None, metavar="PEER",
              help="A peer of demo.json (e.g. labo): MTA, mutual TLS with its certificate, DKIM-signed with its key.")
@click.option("--as", "user", default=None, metavar="ADDRESS",
              help="A mailbox of demo.json: submission (implicit TLS) with the kit's password.")
@click.option("--from", "sender", default=None, help="With --as-peer: another address of the peer's domain.")
@click.option("--to", "recipients", required=True, multiple=True, help="A recipient (repeatable).")
@click.option("--subject", default="Message de démonstration", show_default=True)
@click.option("--body", default="Bonjour,\nCeci est un message de démonstration.\n", show_default=False)
@click.option("--attach", "attachments", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A file to attach (repeatable).")
def demo_send(home: Path, peer: str | None, user: str | None, sender: str | None, recipients: tuple[str, ...],
              subject: str, body: str, attachments: tuple[Path, ...]) -> None:
    """Send one message into the running kit, as a peer operator (--as-peer) or as one of our users (--as).

    One line per recipient: `accepted ADDRESS <reply>` or `refused ADDRESS: <reply>`; exit 1 if any was refused.
    """
    import smtplib

    from .demo_send import SendRefused, send_as_peer, send_as_user

    if (peer is None) == (user is None):
        raise click.UsageError("say who sends: --as-peer PEER or --as ADDRESS")
    try:
        if peer is not None:
            sent = send_as_peer(home, peer, recipients, subject, body, sender=sender, attachments=attachments)
        else:
            sent = send_as_user(home, str(user), recipients, subject, body, attachments=attachments)
    except SendRefused as exc:
        raise click.ClickException(f"refused: {exc}") from exc
    except (OSError, smtplib.SMTPException) as exc:
        raise click.ClickException(f"cannot send (is `serve --home {home}` running?): {exc}") from exc
    report_recipients(recipients, sent.refused, sent.reply)


if __name__ == "__main__":
    main()
