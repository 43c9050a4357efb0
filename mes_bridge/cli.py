"""The ``mes-bridge`` command: run the bridge, look at its patients and their messages, send as a patient."""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import sys
from pathlib import Path

import click

from mssante_operator.cli import HOME_OPTION  # the operator's HOME: the bridge reads its [bridge] table
from mssante_operator.errors import ConfigError

from .settings import BridgeSettings, load_bridge_settings


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
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-line chatter


@main.command()
@HOME_OPTION
def serve(home: Path) -> None:
    """Run the LMTP intake and the registry in the foreground until SIGTERM or SIGINT."""
    from .service import BridgeService

    settings = _settings(home)
    try:
        service = BridgeService(settings)
    except (OSError, ValueError, ConfigError) as exc:
        raise click.ClickException(f"cannot start: {exc}") from exc
    try:
        asyncio.run(service.run())
    except (OSError, ConfigError) as exc:
        raise click.ClickException(f"cannot start: {exc}") from exc


def _actor() -> str:
    return f"cli:{getpass.getuser()}"
