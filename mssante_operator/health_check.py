"""`mssante-operator check`: is this HOME fit to run, and can it reach what it depends on?

One finding per item, each ``ok``, ``warn`` (works, but act soon: a certificate expiring within
``EXPIRY_WARNING``, a liste blanche older than its refresh interval) or ``fail`` (mail will be refused or
cannot flow). Meant for cron and monitoring: it reads and asks, never writes (no migration, no download),
and an item that cannot be checked is a failure of that item, not a crash of the command.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from mssante_base.errors import ConfigError
from mssante_base.trust.revocation import RevocationError, load_certificates, read_crl
from mssante_base.trust.tls import server_context

from .config import Settings, load_settings

Status = Literal["ok", "warn", "fail"]
EXPIRY_WARNING = timedelta(days=30)
STALE_FACTOR = 2  # a liste blanche older than this many refresh intervals fails


@dataclass(frozen=True)
class Finding:
    status: Status
    item: str
    detail: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.item}  {self.detail}"

    def json(self) -> str:
        return json.dumps({"status": self.status, "item": self.item, "detail": self.detail}, ensure_ascii=False)


class Problem(Exception):
    """A check's verdict other than ok: its status and the sentence saying why."""

    def __init__(self, status: Status, detail: str) -> None:
        super().__init__(detail)
        self.status = status


def _days(delta: timedelta) -> str:
    """A duration as an operator reads it: minutes, hours under two days, then days."""
    minutes = delta.total_seconds() / 60
    if abs(minutes) < 60:
        return f"{minutes:.0f} min"
    return f"{minutes / 60:.1f} h" if abs(minutes) < 48 * 60 else f"{minutes / 1440:.0f} days"


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M}Z"


def check_certificate(settings: Settings, now: datetime) -> str:
    """Our chain (tls.cert) leads to a CA of the bundle, serves as server and client, is in date, fits the key."""
    cert_path, key_path = settings.path(settings.tls.cert), settings.path(settings.tls.key)
    ca_bundle = settings.path(settings.trust_space.ca_bundle)
    try:
        server_context(cert_path, key_path, ca_bundle)  # OpenSSL: the key is the certificate's
    except (OSError, ssl.SSLError) as exc:
        raise Problem("fail", f"{cert_path.name} and {key_path.name} cannot be used together: {exc}") from exc
    chain = load_certificates(cert_path)
    leaf = chain[0]
    _check_chain(chain, load_certificates(ca_bundle), now)
    try:
        usages = set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        usages = set()
    missing = [name for name, oid in (("serverAuth", ExtendedKeyUsageOID.SERVER_AUTH),
                                      ("clientAuth", ExtendedKeyUsageOID.CLIENT_AUTH)) if oid not in usages]
    subject = leaf.subject.rfc4514_string()
    if missing:
        raise Problem("fail", f"{subject} lacks the extended key usage {' and '.join(missing)} "
                              "(peers need both: we serve them and deliver to them)")
    if leaf.not_valid_before_utc > now:
        raise Problem("fail", f"{subject} is not valid before {_when(leaf.not_valid_before_utc)}")
    left = leaf.not_valid_after_utc - now
    if left < timedelta(0):
        raise Problem("fail", f"{subject} expired on {_when(leaf.not_valid_after_utc)}")
    detail = f"{subject}, expires {_when(leaf.not_valid_after_utc)} (in {_days(left)})"
    if left < EXPIRY_WARNING:
        raise Problem("warn", f"{detail}: renew it")
    return detail


def _check_chain(chain: list[x509.Certificate], authorities: list[x509.Certificate], now: datetime) -> None:
    """Each certificate is signed by the next one (of the file, then of the bundle), up to a bundle CA."""
    candidates = [*chain[1:], *authorities]
    current = chain[0]
    for _ in range(len(candidates) + 1):
        if current in authorities:
            return
        issuer = next((ca for ca in candidates if ca.subject == current.issuer and ca is not current), None)
        if issuer is None:
            raise Problem("fail", f"{current.subject.rfc4514_string()} is not issued by a CA of the trust bundle "
                                  f"(issuer {current.issuer.rfc4514_string()})")
        try:
            current.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, x509.InvalidSignature) as exc:
            raise Problem("fail", f"{current.subject.rfc4514_string()}: signature of its issuer does not verify "
                                  f"({exc or type(exc).__name__})") from exc
        if not issuer.not_valid_before_utc <= now <= issuer.not_valid_after_utc:
            raise Problem("fail", f"CA {issuer.subject.rfc4514_string()} is out of date "
                                  f"(valid until {_when(issuer.not_valid_after_utc)})")
        current = issuer
    raise Problem("fail", "the certificate chain loops")


def check_crl(settings: Settings, path: Path, now: datetime) -> str:
    """Readable, signed by a trust CA, not past its nextUpdate (peers it revokes would pass again)."""
    try:
        crl = read_crl(path, load_certificates(settings.path(settings.trust_space.ca_bundle)))
    except RevocationError as exc:
        raise Problem("fail", str(exc)) from exc
    issuer = crl.issuer.rfc4514_string()
    detail = f"{len(crl)} revoked by {issuer}, issued {_days(now - crl.last_update_utc)} ago"
    next_update = crl.next_update_utc
    if next_update is None:
        return detail
    if next_update < now:
        raise Problem("fail", f"stale: its nextUpdate {_when(next_update)} is past ({detail})")
    return f"{detail}, next update {_when(next_update)}"


def check_liste_blanche(settings: Settings, now: float) -> str:
    """Parses, and its file is fresh: older than one refresh interval warns; older than two fails when it
    is downloaded (the downloads have been failing), and only warns when it is kept up to date by hand."""
    from .trust_space.liste_blanche import ListeBlancheError, parse_liste_blanche

    ts = settings.trust_space
    path = settings.path(ts.liste_blanche)
    try:
        listed = parse_liste_blanche(path.read_bytes())
        age = now - path.stat().st_mtime
    except (OSError, ListeBlancheError) as exc:
        raise Problem("fail", f"{path}: {exc}") from exc
    source = "downloaded" if ts.liste_blanche_url else "written"
    detail = (f"{len(listed.domains)} domains, {source} {_days(timedelta(seconds=age))} ago "
              f"(refresh every {_days(timedelta(seconds=ts.refresh_interval))})")
    if age > STALE_FACTOR * ts.refresh_interval and ts.liste_blanche_url:
        raise Problem("fail", f"stale: {detail}")  # the download has been failing
    if age > ts.refresh_interval:
        raise Problem("warn", f"late: {detail}")  # without a URL, whoever updates the file is late
    return detail


def check_dkim(settings: Settings) -> str:
    from .trust_space.dkim_signing import DkimSigner

    dkim = settings.dkim
    signer = DkimSigner(settings.operator.domain, dkim.selector, settings.path(dkim.private_key).read_bytes())
    return f"selector {dkim.selector}, {signer.algorithm}"


def check_store(settings: Settings) -> str:
    """The database answers and is this blob directory's (a read: `check` never migrates)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from .store.facade import BlobStorageMismatch, Store

    url = make_url(settings.database_url)
    database = url.database or ""
    if url.get_backend_name() == "sqlite" and database not in ("", ":memory:") and not Path(database).exists():
        raise Problem("fail", f"{database} does not exist yet (`serve` creates it)")
    shown = url.render_as_string(hide_password=True)
    store = Store(settings.database_url, settings.path(settings.storage.blob_dir))
    try:
        store.check_blob_storage()
    except BlobStorageMismatch as exc:
        raise Problem("fail", str(exc)) from exc
    except SQLAlchemyError as exc:
        raise Problem("fail", f"{shown}: {str(exc).splitlines()[0]}") from exc
    finally:
        store.close()
    return shown


def check_annuaire(settings: Settings) -> str:
    """One lookup (LDAP: a bind and a search), through the backend the operator uses."""
    from mssante_base.annuaire import AnnuaireUnavailable
    from mssante_base.annuaire.factory import open_annuaire

    annuaire = settings.annuaire

    async def ask() -> None:
        directory = open_annuaire(annuaire, settings.home)
        try:
            await directory.lookup(f"postmaster@{settings.operator.domain}")
        finally:
            await directory.close()

    where = annuaire.url if annuaire.backend == "ldap" else str(settings.path(annuaire.file))
    try:
        asyncio.run(ask())
    except (AnnuaireUnavailable, ConfigError, OSError, ValueError) as exc:
        raise Problem("fail", f"{annuaire.backend} {where}: {exc}") from exc
    return f"{annuaire.backend} {where} answered"


def check_registry(settings: Settings) -> str:
    """mes_bridge's registry answers /v1/health over mutual TLS, with the configured bridge's certificate."""
    from mssante_base.trust.dn import parse_dn
    from mssante_base.trust.tls import client_context

    from .patients.registry_client import PatientRegistry, RegistryUnavailable

    patients = settings.patients
    assert patients is not None
    tls = client_context(settings.path(settings.tls.cert), settings.path(settings.tls.key),
                         settings.path(settings.trust_space.ca_bundle))
    registry = PatientRegistry(patients.registry_url, tls, bridge_dn=parse_dn(patients.bridge_dn), ttl=0,
                               timeout=patients.registry_timeout)
    try:
        registry.health()
    except RegistryUnavailable as exc:
        raise Problem("fail", f"{patients.registry_url}: {exc}") from exc
    return f"{patients.registry_url} answered"


def _finding(item: str, check: Callable[[], str]) -> Finding:
    try:
        return Finding("ok", item, check())
    except Problem as problem:
        return Finding(problem.status, item, str(problem))
    except Exception as exc:  # any other error fails this item; the next ones still run
        return Finding("fail", item, " ".join(f"{type(exc).__name__}: {exc}".split()))


def run_checks(home: Path) -> Iterator[Finding]:
    """Every finding for HOME, in order; the configuration first (nothing else runs without it)."""
    try:
        settings = load_settings(home)
    except ConfigError as exc:
        yield Finding("fail", "config", "; ".join(line.strip() for line in str(exc).splitlines()))
        return
    yield Finding("ok", "config", str(home.resolve() / "config.toml"))
    now = datetime.now(UTC)
    yield _finding("certificate", lambda: check_certificate(settings, now))
    for crl in settings.trust_space.crl_files:
        yield _finding(f"crl {crl}", partial(check_crl, settings, settings.path(crl), now))
    yield _finding("liste blanche", lambda: check_liste_blanche(settings, time.time()))
    yield _finding("dkim key", lambda: check_dkim(settings))
    yield _finding("store", lambda: check_store(settings))
    yield _finding("annuaire", lambda: check_annuaire(settings))
    if settings.patients is not None:
        yield _finding("registry", lambda: check_registry(settings))
