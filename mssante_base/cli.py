"""Command-line options both services' commands share."""

from __future__ import annotations

from pathlib import Path

import click

HOME_OPTION = click.option(
    "--home", "home", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="The operator's folder, holding config.toml.",
)

