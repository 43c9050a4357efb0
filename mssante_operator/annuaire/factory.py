"""The annuaire that [annuaire] in config.toml describes: for the server, and for `annuaire import`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mssante_base.annuaire import Annuaire
from mssante_base.errors import ConfigError

from ..config import Settings
from .cache import CachedAnnuaire
from .file_backend import FileAnnuaire

# The LDAP backend (ldap3, ~6 MB per process) and the importer are imported where they are used, so a
# server on the file backend never loads them.
if TYPE_CHECKING:
    from .importer import AnnuaireWriter
    from .ldap_backend import LdapOptions

STAMP_FILE = "annuaire.stamp"  # touched by every import; caches of this HOME drop what they hold


def stamp_path(settings: Settings) -> Path:
    return settings.home / STAMP_FILE


def _ldap_options(settings: Settings, *, writer: bool) -> LdapOptions:
    from .ldap_backend import LdapOptions

    try:
        options = LdapOptions.from_settings(settings, writer=writer)
    except OSError as exc:
        raise ConfigError(f"annuaire: cannot read the bind password file: {exc}") from exc
    if options.ca_file is not None and not options.ca_file.is_file():
        raise ConfigError(f"annuaire.ca_file: {options.ca_file} not found")
    return options


def open_annuaire(settings: Settings) -> Annuaire:
    """The server's annuaire. An LDAP directory that is down does not stop the start: mail to it
    is deferred (451 4.4.3) until it answers again."""
    section = settings.annuaire
    if section.backend == "file":
        return FileAnnuaire(settings.path(section.file))
    from .ldap_backend import LdapAnnuaire, LdapDirectory

    directory = LdapDirectory(_ldap_options(settings, writer=False))
    return CachedAnnuaire(
        LdapAnnuaire(directory), size=section.cache_size, ttl=section.cache_ttl,
        negative_ttl=section.negative_ttl, stamp=stamp_path(settings),
    )


def open_writer(settings: Settings) -> AnnuaireWriter:
    """The backend `annuaire import` writes into."""
    from .importer import FileWriter, LdapWriter
    from .ldap_backend import LdapDirectory

    section = settings.annuaire
    if section.backend == "file":
        return FileWriter(settings.path(section.file))
    return LdapWriter(LdapDirectory(_ldap_options(settings, writer=True)))
