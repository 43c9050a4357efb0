"""The ``mssante-operator`` command: init, serve, mailbox ls (contract names, see ARCHITECTURE.md)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import click

from .config import Settings, load_settings
from .errors import ConfigError

HOME_OPTION = click.option(
    "--home", "home", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="The operator's folder, holding config.toml.",
)


def _settings(home: Path) -> Settings:
    try:
        return load_settings(home)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.pass_context
def main(ctx: click.Context, log_level: str) -> None:
    """A secure health-messaging mail operator in the style of MSSanté."""
    ctx.obj = {"log_level": log_level.upper()}
    logging.basicConfig(
        level=log_level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
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
    click.echo(f"start it with: mssante-operator serve --home {home}")


@main.command()
@HOME_OPTION
@click.option("--worker", is_flag=True, hidden=True, help="Run as one worker of a supervisor.")
@click.pass_context
def serve(ctx: click.Context, home: Path, worker: bool) -> None:
    """Run every service of HOME/config.toml in the foreground until SIGTERM or SIGINT.

    With [server] workers > 1 (0: one per CPU), a supervisor runs that many worker processes
    sharing the ports (bound once by the supervisor); SIGHUP reloads the liste blanche and the CRLs.
    """
    from .app import Operator, bind_listeners, check_start_up
    from .listening import WorkerLoad, inherited_listeners
    from .workers import Supervisor, prepare_store

    settings = _settings(home)
    count = settings.server.worker_count
    try:
        if count > 1 and not worker:
            check_start_up(settings)  # fail here, once, on a bad certificate or liste blanche
            prepare_store(settings)
            sys.exit(Supervisor(home.resolve(), count, ctx.obj["log_level"], bind_listeners(settings)).run())
        if worker:
            operator = Operator(settings, inherited=inherited_listeners(), load=WorkerLoad.inherited())
        else:
            operator = Operator(settings)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot start: {exc}") from exc
    asyncio.run(operator.serve_forever(prepare_store=not worker))


@main.group()
def mailbox() -> None:
    """Look into mailboxes."""


@mailbox.command("ls")
@click.argument("address")
@HOME_OPTION
def mailbox_ls(address: str, home: Path) -> None:
    """List the messages of ADDRESS's INBOX, one JSON object per line."""
    from .store.facade import Store

    settings = _settings(home)
    store = Store(settings.database_url, settings.path(settings.storage.blob_dir))
    try:
        store.migrate()  # a no-op once `serve` has run; lets `ls` answer on a fresh kit too
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
    finally:
        store.close()


if __name__ == "__main__":
    main()
