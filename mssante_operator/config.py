"""The operator's settings: one TOML file (HOME/config.toml), typed and validated at start-up.

Relative paths in the file are relative to HOME, so a demo kit can be moved as a whole. Errors name
the file and the dotted key that is wrong, because an operator reading a start-up failure at 3 a.m.
should not have to guess.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from mssante_base.annuaire.settings import AnnuaireSettings
from mssante_base.errors import ConfigError
from mssante_base.settings import CONFIG_FILE, Duration, LimitsSettings, LoggingSettings, Section, format_errors


class OperatorSettings(Section):
    """Who this operator is on the trust space."""

    domain: str
    hostname: str
    local_domains: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _own_domain_is_local(self) -> OperatorSettings:
        if self.domain.lower() not in (d.lower() for d in self.local_domains):
            object.__setattr__(self, "local_domains", [self.domain, *self.local_domains])
        return self


class ServerSettings(Section):
    """Process layout: several worker processes share the listening ports (SO_REUSEPORT)."""

    workers: int = Field(default=0, ge=0, le=64)  # 0: one per CPU

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1


class StorageSettings(Section):
    url: str = "sqlite:///store.db"
    blob_dir: Path = Path("blobs")


class ListenerSettings(Section):
    """One listening socket. ``tls`` says whether TLS starts at once or after STARTTLS."""

    host: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)
    tls: Literal["starttls", "implicit"] = "starttls"


class HttpsListenerSettings(ListenerSettings):
    """An HTTPS listener: TLS at once (our server certificate, no client certificate asked)."""

    tls: Literal["implicit"] = "implicit"


class ListenersSettings(Section):
    mta: ListenerSettings | None = None
    mtas: ListenerSettings | None = None
    imap: ListenerSettings | None = None
    imaps: ListenerSettings | None = None
    submission: ListenerSettings | None = None  # 587-style: STARTTLS, then AUTH
    submissions: ListenerSettings | None = None  # 465-style: implicit TLS (RFC 8314)
    autoconfig: HttpsListenerSettings | None = None  # mail clients' autoconfig document (docs/client-setup.md)


class ImapSettings(Section):
    """Limits of the IMAP server (RFC 3501 5.4: autologout at least 30 minutes once logged in)."""

    max_line: int = Field(default=64 * 1024, ge=1024)
    append_limit: int = Field(default=50 * 1024 * 1024, ge=1024)  # also the largest literal
    login_timeout: Duration = 60.0
    autologout: Duration = Field(default=1800.0, ge=1800.0)
    idle_timeout: Duration = Field(default=1800.0, ge=60.0)
    # Per worker process. A hospital's NAT puts many users behind one address: the per-IP limit
    # is generous, the per-user one catches a runaway client (Thunderbird opens up to 5 per account).
    max_connections: int = Field(default=5000, ge=1)
    max_connections_per_ip: int = Field(default=500, ge=1)
    max_connections_per_user: int = Field(default=20, ge=1)


class AuthSettings(Section):
    """Who may log in: hashed passwords, and (optional) OAuth2 bearer tokens of an identity provider."""

    credentials: Path = Path("credentials.json")  # imported into the store's accounts at the first start only
    token_issuer: str = ""  # e.g. Pro Santé Connect's issuer URL; empty: OAUTHBEARER/XOAUTH2 refused
    token_audience: str = ""
    token_jwks: str = ""  # a file path (relative to HOME) or an https URL
    token_rpps_claim: str = "SubjectNameID"  # noqa: S105 - a claim name, not a secret
    cache_ttl: Duration = Field(default=300.0, ge=0.0)  # verified logins remembered this long; "0": no cache


class TlsSettings(Section):
    """This operator's certificate (full chain, leaf first) and key, used as server and as client."""

    cert: Path
    key: Path


class TrustSpaceSettings(Section):
    """The trust CA bundle, its CRLs and the liste blanche; with URLs, downloaded every refresh_interval."""

    ca_bundle: Path
    crl_files: list[Path] = Field(default_factory=list)
    liste_blanche: Path
    refresh_interval: Duration = Field(default=86400.0, gt=0.0)
    liste_blanche_url: str = ""  # https:// only, with its SHA-256 beside it; empty: the file is kept up to date by hand
    liste_blanche_checksum_url: str = ""
    crl_urls: list[str] = Field(default_factory=list)  # one per crl_files entry, same order ("": not downloaded)

    @model_validator(mode="after")
    def _sources_are_complete(self) -> TrustSpaceSettings:
        if self.liste_blanche_url or self.liste_blanche_checksum_url:
            for key in ("liste_blanche_url", "liste_blanche_checksum_url"):
                if not getattr(self, key).startswith("https://"):
                    raise ValueError(f"{key}: {getattr(self, key)!r} must be an https:// URL (both are needed)")
        if self.crl_urls and len(self.crl_urls) != len(self.crl_files):
            raise ValueError(f"crl_urls: {len(self.crl_urls)} URLs for {len(self.crl_files)} crl_files "
                             "(one per file, same order; \"\" for a file not downloaded)")
        for url in self.crl_urls:  # CRLs are signed: plain http is their usual distribution point
            if url and not url.startswith(("https://", "http://")):
                raise ValueError(f"crl_urls: {url!r} is not an http:// or https:// URL")
        return self


class DkimSettings(Section):
    """Our own signing key, and where peers' public keys come from (DNS, or a static table)."""

    selector: str
    private_key: Path
    key_source: Literal["dns", "static"] = "dns"
    static_keys: dict[str, str] = Field(default_factory=dict)
    dns_timeout: Duration = 5.0

    @model_validator(mode="after")
    def _static_needs_keys(self) -> DkimSettings:
        if self.key_source == "static" and not self.static_keys:
            raise ValueError("key_source = 'static' needs a [dkim.static_keys] table")
        return self


class SubmissionSettings(Section):
    """What the submission listeners do with an accepted message besides routing it."""

    sent_copy: bool = True  # a copy in the sender's Sent folder (clients then need not APPEND one)
    max_recipients: int = Field(default=1000, ge=1)  # a hospital's circular; peers still get <= 100 per session


class OutboundSettings(Section):
    """The outbound queue: next hops, retries, lifetime (contract keys: routes, retry_schedule, max_lifetime)."""

    routes: dict[str, str] = Field(default_factory=dict)  # domain -> "host:port", before DNS MX
    retry_schedule: list[Duration] = Field(default_factory=lambda: [60.0, 300.0, 900.0, 3600.0, 14400.0])
    retry_interval: Duration = Field(default=3600.0, gt=0)  # after the schedule: hourly, until max_lifetime
    max_lifetime: Duration = Field(default=5 * 86400.0, gt=0)
    delay_warning: Duration = Field(default=4 * 3600.0, ge=0)  # "0": no delay DSN
    per_peer_connections: int = Field(default=4, ge=1, le=100)
    connect_timeout: Duration = 30.0
    command_timeout: Duration = 120.0
    idle_timeout: Duration = 30.0  # a connection to a peer is kept this long for the next message
    lease: Duration = Field(default=300.0, ge=1.0)  # a claimed recipient is another worker's after this
    batch: int = Field(default=200, ge=1, le=5000)  # recipients claimed at once
    keep_finished: Duration = 86400.0  # delivered/failed messages stay visible to `queue show` this long

    @model_validator(mode="after")
    def _routes_are_host_port(self) -> OutboundSettings:
        for domain, hop in self.routes.items():
            host, _, port = hop.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"routes.{domain}: {hop!r} is not 'host:port'")
        return self


class PatientsSettings(Section):
    """Patient messaging (``[matricule INS]@patient.mssante.fr``): where mes_bridge answers, and who it is.

    Without this section the patient path is closed (451 4.3.0): mail to patients waits at the sender.
    """

    registry_url: str  # the bridge's registry, https://host:port (mutual TLS: we present our certificate)
    lmtp: str  # the bridge's LMTP intake, "host:port", implicit TLS (mutual)
    bridge_dn: str  # the bridge's certificate subject: it may submit as patients, and must serve LMTP/registry
    state_cache_ttl: Duration = Field(default=30.0, ge=0.0)  # a patient space's state is remembered this long
    registry_timeout: Duration = Field(default=5.0, gt=0.0)

    @model_validator(mode="after")
    def _checked(self) -> PatientsSettings:  # bridge_dn is parsed by check_start_up (cryptography stays unloaded)
        if not self.registry_url.startswith("https://"):
            raise ValueError(f"registry_url: {self.registry_url!r} must be an https:// URL")
        host, _, port = self.lmtp.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"lmtp: {self.lmtp!r} is not 'host:port'")
        return self


class MetricsSettings(Section):
    """Prometheus text at ``http://LISTEN/metrics``: plain HTTP without authentication, so keep ``listen`` on
    loopback or a private network (the numbers say how busy the operator is and who its peers are not)."""

    listen: str  # "host:port"

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @model_validator(mode="after")
    def _host_port(self) -> MetricsSettings:
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"listen: {self.listen!r} is not 'host:port'")
        return self


class Settings(Section):
    """Everything the operator reads from config.toml, with paths resolved against HOME."""

    home: Path
    operator: OperatorSettings
    server: ServerSettings = ServerSettings()
    storage: StorageSettings = StorageSettings()
    listeners: ListenersSettings
    tls: TlsSettings
    trust_space: TrustSpaceSettings
    dkim: DkimSettings
    annuaire: AnnuaireSettings = AnnuaireSettings()
    limits: LimitsSettings = LimitsSettings()
    imap: ImapSettings = ImapSettings()
    auth: AuthSettings = AuthSettings()
    submission: SubmissionSettings = SubmissionSettings()
    outbound: OutboundSettings = OutboundSettings()
    patients: PatientsSettings | None = None
    metrics: MetricsSettings | None = None  # absent: no metrics served
    logging: LoggingSettings = LoggingSettings()
    # mes_bridge's own table (a separate service; `mes_bridge.settings` validates it): kept as data here.
    bridge: dict[str, Any] | None = None

    def path(self, value: Path) -> Path:
        """A configured path, relative paths being taken from HOME."""
        return value if value.is_absolute() else self.home / value

    @property
    def database_url(self) -> str:
        """The storage URL with a relative SQLite file placed in HOME."""
        prefix = "sqlite:///"
        url = self.storage.url
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
            return prefix + str(self.path(Path(url[len(prefix):])))
        return url


def load_settings(home: Path) -> Settings:
    """Read and validate HOME/config.toml, raising ConfigError that names the file and keys."""
    home = home.resolve()
    file = home / CONFIG_FILE
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{file}: not found (create a demo kit with `mssante-operator init {home}`)") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot be read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
    if "home" in data:
        raise ConfigError(f"{file}: home: unknown key (HOME is the folder that holds the file)")
    try:
        return Settings.model_validate({**data, "home": home})
    except ValidationError as exc:
        raise ConfigError(format_errors(file, exc)) from exc
