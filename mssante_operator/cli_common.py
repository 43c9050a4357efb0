"""What every ``mssante-operator`` command module shares: the --home option, the settings of a home,
and its store (migrated, blob storage checked, closed afterwards). Kept apart from cli.py so that the
command modules depend on it and cli.py on them, never the other way round."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from mssante_base.errors import ConfigError

from .config import Settings, load_settings

if TYPE_CHECKING:
    from .store.facade import Store

T = TypeVar("T")


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
