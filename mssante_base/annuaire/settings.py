"""The [annuaire] table of config.toml: the operator serves from it and mes_bridge names documents' authors
with it, so both read it the same way."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from mssante_base.errors import ConfigError
from mssante_base.settings import CONFIG_FILE, Duration, Section, format_errors, read_config


class LdapAttributes(Section):
    """Which LDAP attribute holds each field of a mailbox (defaults: schema/mssante.schema)."""

    address: str = "mssanteAddress"  # UTF-8; cosine's `mail` (ASCII only) is also written when it fits
    kind: str = "mssanteBalType"
    display_name: str = "displayName"
    rpps: str = "mssanteIdNatPs"
    structure_id: str = "mssanteIdNatStruct"
    service: str = "mssanteService"
    profession_code: str = "mssanteProfessionCode"
    profession_label: str = "mssanteProfessionLabel"
    liste_rouge: str = "mssanteListeRouge"
    dematerialisation: str = "mssanteDematerialisation"
    pharmacy: str = "mssantePharmacy"
    delegates: str = "mssanteDelegate"
    origin: str = "mssanteOrigin"


class AnnuaireSettings(Section):
    """Where mailboxes are resolved: the embedded JSON file, or an LDAP directory (with a cache)."""

    backend: Literal["file", "ldap"] = "file"
    file: Path = Path("annuaire.json")
    url: str = ""  # ldaps://host:636 or ldap://host:389 (then StartTLS, always)
    ca_file: Path | None = None  # CA that signed the directory's certificate (default: the system's)
    bind_dn: str = ""
    bind_password: str = ""
    bind_password_file: Path | None = None
    allow_anonymous: bool = False
    import_bind_dn: str = ""  # `annuaire import` writes with this identity (default: bind_dn)
    import_bind_password: str = ""
    import_bind_password_file: Path | None = None
    base_dn: str = ""
    object_classes: list[str] = Field(default_factory=lambda: ["inetOrgPerson", "mssanteMailbox"])
    filter: str = "(objectClass=mssanteMailbox)"
    timeout: Duration = 5.0
    pool_size: int = Field(default=4, ge=1, le=64)
    cache_size: int = Field(default=50_000, ge=0)
    cache_ttl: Duration = 300.0
    negative_ttl: Duration = 60.0
    attributes: LdapAttributes = LdapAttributes()

    @model_validator(mode="after")
    def _ldap_is_complete(self) -> AnnuaireSettings:
        if self.backend != "ldap":
            return self
        if not re.match(r"^ldaps?://[^/\s]+/?$", self.url):
            raise ValueError("backend = 'ldap' needs url = 'ldaps://host:port' or 'ldap://host:port' (StartTLS)")
        if not self.base_dn:
            raise ValueError("backend = 'ldap' needs base_dn")
        if not self.bind_dn and not self.allow_anonymous:
            raise ValueError("backend = 'ldap' needs bind_dn (or allow_anonymous = true)")
        if self.bind_dn and not (self.bind_password or self.bind_password_file):
            raise ValueError("bind_dn needs bind_password or bind_password_file")
        return self



class _AnnuaireTable(BaseModel):
    annuaire: AnnuaireSettings = AnnuaireSettings()  # the other tables are their services' business


def load_annuaire_settings(home: Path) -> AnnuaireSettings:
    """[annuaire] of HOME/config.toml, validated (ConfigError names the file and the dotted key)."""
    file = home.resolve() / CONFIG_FILE
    try:
        return _AnnuaireTable.model_validate(read_config(file)).annuaire
    except ValidationError as exc:
        raise ConfigError(format_errors(file, exc)) from exc
