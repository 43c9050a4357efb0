"""The bridge's settings: the ``[bridge]`` table of HOME/config.toml, typed and validated at start-up.

The bridge shares the operator's HOME and configuration file (the operator keeps the table as data and
never reads it), so one demo kit configures both. Relative paths are relative to HOME; errors name the
file and the dotted key (``bridge.listeners.lmtp.port``), as the operator's own settings do.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mssante_base.errors import ConfigError
from mssante_base.settings import CONFIG_FILE, Duration, format_errors, read_config
from mssante_base.trust.dn import NormalDn, parse_dn

from .lifecycle import SpacePolicy

SQLITE_PREFIX = "sqlite:///"
MIB = 1024 * 1024


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def split_host_port(value: str) -> tuple[str, int]:
    """``host:port`` (IPv6 hosts in brackets or not) as a pair; ValueError naming the value otherwise."""
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not 'host:port'")
    return host, int(port)


class BridgeListener(_Section):
    """One listening socket of the bridge; both speak TLS at once and require a client certificate."""

    host: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)  # 0: any free port (tests read the bound one)


class BridgeListeners(_Section):
    lmtp: BridgeListener | None = None
    registry: BridgeListener | None = None
    web: BridgeListener | None = None  # the patient space: HTTPS, no client certificate (patients log in)


class BridgeSettings(_Section):
    """Everything the bridge reads from ``[bridge]``, with paths resolved against HOME."""

    home: Path
    database: str = "sqlite:///bridge.db"
    blob_dir: Path = Path("bridge-blobs")
    cert: Path  # server certificate (LMTP, registry) and client certificate (submission to the operator)
    key: Path
    ca_bundle: Path  # the operators' client certificates must chain to it
    crl_files: list[Path] = Field(default_factory=list)
    trusted_operators: list[str] = Field(default_factory=list)  # certificate DNs allowed on LMTP and registry
    patients_file: Path | None = None  # seeds patients not yet known; never overwrites a known one
    operator_submission: str | None = None  # "host:port" of the operator's implicit-TLS submission listener
    max_message_size: int = Field(default=25 * 1024 * 1024, ge=1024)
    max_document_size: int = Field(default=10 * MIB, ge=1024)  # larger attachments stay in the message only
    max_documents_per_message: int = Field(default=20, ge=0)
    max_filed_per_message: int = Field(default=50 * MIB, ge=1024)  # total bytes filed from one message
    intake_workers: int = Field(default=2, ge=0, le=64)  # processes reading big messages (0: in threads)
    max_upload_size: int = Field(default=5 * MIB, ge=1024)  # a document the patient adds (5 MB, as the MES app)
    web_session_key_file: Path = Path("bridge-web.key")  # 32 random bytes, made (0600) at first start
    web_session_idle: int = Field(default=15 * 60, ge=60)  # seconds of inactivity before a new login
    outbox_retry: list[int] = Field(default_factory=lambda: [60, 300, 900, 3600])  # seconds, then hourly
    outbox_max_age: int = Field(default=5 * 24 * 3600, ge=60)  # a read receipt not accepted by then is dropped
    opt_out_window: Duration = Field(default=6 * 7 * 86400.0, ge=0)  # after it, no opposition: created by default
    activation_code_validity: Duration = Field(default=6 * 7 * 86400.0, gt=0)  # a provisional code's life
    representation_until_age: int = Field(default=18, ge=0, le=25)  # a parent represents a child until; 0: always
    archive_retention: Duration = Field(default=3653 * 86400.0, ge=0)  # a deleted space's archive, then purged
    lifecycle_interval: Duration = Field(default=300.0, gt=0)  # how often serve ends windows and purges
    listeners: BridgeListeners = BridgeListeners()

    @field_validator("trusted_operators")
    @classmethod
    def _dns_parse(cls, values: list[str]) -> list[str]:
        for index, value in enumerate(values):
            try:
                parse_dn(value)
            except ValueError as exc:
                raise ValueError(f"item {index} ({value!r}): {exc}") from exc
        return values

    @field_validator("operator_submission")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            split_host_port(value)
        return value

    def path(self, value: Path) -> Path:
        """A configured path, relative paths being taken from HOME."""
        return value if value.is_absolute() else self.home / value

    @property
    def database_url(self) -> str:
        """The database URL with a relative SQLite file placed in HOME."""
        url = self.database
        if url.startswith(SQLITE_PREFIX) and not url.startswith(SQLITE_PREFIX + "/") and not url.endswith(":memory:"):
            return SQLITE_PREFIX + str(self.path(Path(url.removeprefix(SQLITE_PREFIX))))
        return url

    @property
    def space_policy(self) -> SpacePolicy:
        return SpacePolicy(opt_out_window=timedelta(seconds=self.opt_out_window),
                           activation_code_validity=timedelta(seconds=self.activation_code_validity),
                           representation_until_age=self.representation_until_age,
                           archive_retention=timedelta(seconds=self.archive_retention))

    @property
    def trusted_dns(self) -> frozenset[NormalDn]:
        return frozenset(parse_dn(value) for value in self.trusted_operators)

    @property
    def submission_address(self) -> tuple[str, int] | None:
        return None if self.operator_submission is None else split_host_port(self.operator_submission)


class _ConfigFile(BaseModel):
    """Only to have pydantic name errors ``bridge.<key>``: the rest of the file is the operator's."""

    bridge: BridgeSettings


def _read_table(file: Path) -> dict[str, Any]:
    table = read_config(file).get("bridge")
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: bridge: missing table (mes_bridge is configured by a [bridge] table)")
    return table


def load_bridge_settings(home: Path, data: dict[str, Any] | None = None) -> BridgeSettings:
    """Validate ``[bridge]`` of HOME/config.toml (or ``data``, that table already read), raising ConfigError."""
    home = Path(home).resolve()
    file = home / CONFIG_FILE
    table = _read_table(file) if data is None else data
    if "home" in table:
        raise ConfigError(f"{file}: bridge.home: unknown key (HOME is the folder that holds the file)")
    try:
        return _ConfigFile.model_validate({"bridge": {**table, "home": home}}).bridge
    except ValidationError as exc:
        raise ConfigError(format_errors(file, exc)) from exc
