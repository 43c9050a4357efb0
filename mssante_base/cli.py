"""Command-line pieces both services' commands share."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import click

HOME_OPTION = click.option(
    "--home", "home", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="The operator's folder, holding config.toml.",
)



def report_recipients(recipients: Iterable[str], refused: Mapping[str, str], accepted: str) -> None:
    """One line per recipient, `accepted ADDRESS <accepted>` or `refused ADDRESS: <reply>`, as both
    services' sending commands print them; exit status 1 when any was refused."""
    for address in recipients:
        if address in refused:
            click.echo(f"refused {address}: {refused[address]}")
        else:
            click.echo(f"accepted {address} {accepted}")
    if refused:
        sys.exit(1)
