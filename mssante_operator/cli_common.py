"""What every ``mssante-operator`` command module shares: the --home option, the settings of a home,
its annuaire, and its store (migrated, blob storage checked, closed afterwards). Kept apart from cli.py so that the
command modules depend on it and cli.py on them, never the other way round."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from mssante_base.errors import ConfigError

from .config import Settings, load_settings

if TYPE_CHECKING:
    from mssante_base.annuaire import Annuaire

    from .store.facade import Store

T = TypeVar("T")

EX_TEMPFAIL = 75  # sysexits: try again later (the directory is down)


def settings_of(home: Path) -> Settings:
    """HOME's settings; a configuration error is the command's error message, not a traceback."""
    try:
        return load_settings(home)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


@contextlib.contextmanager
def migrated_store(home: Path) -> Iterator[Store]:
    """The store of HOME, migrated (its blob storage checked), closed afterwards."""
    from .store.facade import BlobStorageMismatch, Store  # loaded only by the commands that need it

    settings = settings_of(home)
    store = Store(settings.database_url, settings.path(settings.storage.blob_dir))
    try:
        try:
            store.migrate()
        except BlobStorageMismatch as exc:
            raise click.ClickException(str(exc)) from exc
        yield store
    finally:
        store.close()


def with_store(home: Path, action: Callable[[Store], T]) -> T:
    """Run ``action`` on the store of HOME (see :func:`migrated_store`)."""
    with migrated_store(home) as store:
        return action(store)


def annuaire_call(settings: Settings, question: Callable[[Annuaire], Awaitable[T]]) -> T:
    """Ask the configured annuaire one question, outside any server."""
    from mssante_base.annuaire import AnnuaireUnavailable
    from mssante_base.annuaire.factory import open_annuaire

    async def ask() -> T:
        directory = open_annuaire(settings.annuaire, settings.home)
        try:
            return await question(directory)
        finally:
            await directory.close()

    try:
        return asyncio.run(ask())
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    except AnnuaireUnavailable as exc:
        click.echo(f"annuaire unavailable: {exc}", err=True)
        sys.exit(EX_TEMPFAIL)
