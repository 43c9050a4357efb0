"""The annuaire that [annuaire] in config.toml describes: for the operator's server, for `annuaire import`
and for mes_bridge (which names documents' authors with it)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mssante_base.annuaire import Annuaire
from mssante_base.annuaire.cache import CachedAnnuaire
from mssante_base.annuaire.file_backend import FileAnnuaire
from mssante_base.annuaire.settings import AnnuaireSettings
from mssante_base.errors import ConfigError

# The LDAP backend (ldap3, ~6 MB per process) is imported where it is used, so a server on the file
# backend never loads it.
if TYPE_CHECKING:
    from mssante_base.annuaire.ldap_backend import LdapOptions

STAMP_FILE = "annuaire.stamp"  # touched by every import; caches of this HOME drop what they hold


def stamp_path(home: Path) -> Path:
    return home / STAMP_FILE


def ldap_options(section: AnnuaireSettings, home: Path, *, writer: bool) -> LdapOptions:
    """The LDAP options of [annuaire] (relative paths from HOME), their files checked (ConfigError)."""
    from mssante_base.annuaire.ldap_backend import LdapOptions

    try:
        options = LdapOptions.from_settings(section, home, writer=writer)
    except OSError as exc:
        raise ConfigError(f"annuaire: cannot read the bind password file: {exc}") from exc
    if options.ca_file is not None and not options.ca_file.is_file():
        raise ConfigError(f"annuaire.ca_file: {options.ca_file} not found")
    return options


def open_annuaire(section: AnnuaireSettings, home: Path) -> Annuaire:
    """The server's annuaire. An LDAP directory that is down does not stop the start: mail to it
    is deferred (451 4.4.3) until it answers again."""
    if section.backend == "file":
        return FileAnnuaire(section.file if section.file.is_absolute() else home / section.file)
    from mssante_base.annuaire.ldap_backend import LdapAnnuaire, LdapDirectory

    directory = LdapDirectory(ldap_options(section, home, writer=False))
    return CachedAnnuaire(
        LdapAnnuaire(directory), size=section.cache_size, ttl=section.cache_ttl,
        negative_ttl=section.negative_ttl, stamp=stamp_path(home),
    )
