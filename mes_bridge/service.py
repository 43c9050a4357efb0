"""The bridge as one running service: LMTP intake, registry, patient web space, the read-receipt
sender and the spaces' lifecycle job (windows ending, archives purged), until SIGTERM or SIGINT.

At start the store is opened (schema created), patients.json seeds the patients not known yet, the
CRLs are read and both ports bound; "bridge ready" is logged once both listeners accept connections
(the operator's ``serve`` and the tests wait for that line).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import NameOID

from mssante_base.annuaire import Annuaire, AnnuaireUnavailable
from mssante_base.annuaire.factory import open_annuaire
from mssante_base.annuaire.settings import load_annuaire_settings
from mssante_base.connection_limits import ConnectionLimiter
from mssante_base.errors import ConfigError
from mssante_base.listening import Acceptor, bind_listener
from mssante_base.patients.ins import InvalidIns, validate_ins
from mssante_base.patients.states import PatientState
from mssante_base.settings import LimitsSettings

from .analysis_pool import AnalysisPool
from .filing.plan import FilingLimits
from .lmtp import lmtp_factory
from .outbox import OutboxSender
from .registry import make_app, start_registry
from .settings import BridgeSettings
from .store import KNOWN_STATES, BridgeStore, NewPatient, PatientNotFound
from .trust import OperatorGate, server_tls
from .web.app import make_web_app, start_web, web_tls

log = logging.getLogger(__name__)


PATIENT_TEXT_KEYS = ("given_name", "family_name", "password_hash", "birth_date", "sex", "email",
                     "activation_code_hash")


def read_patients_file(path: Path) -> list[NewPatient]:
    """The patients of a patients.json; ConfigError naming the file and the entry at fault."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the patients file: {exc}") from exc
    entries = document.get("patients") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f'{path}: expected {{"patients": [...]}}')
    patients = []
    for index, entry in enumerate(entries):
        where = f"{path}: patients[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("ins"), str):
            raise ConfigError(f"{where}: an object with an \"ins\" string is expected")
        try:
            ins = validate_ins(entry["ins"])
        except InvalidIns as exc:
            raise ConfigError(f"{where}.ins: {exc}") from exc
        state = entry.get("state", PatientState.ACTIVE.value)
        if state not in {s.value for s in KNOWN_STATES}:
            raise ConfigError(f"{where}.state: {state!r} is not one of {', '.join(sorted(KNOWN_STATES))}")
        names = {key: entry.get(key) for key in PATIENT_TEXT_KEYS}
        if any(value is not None and not isinstance(value, str) for value in names.values()):
            raise ConfigError(f"{where}: {', '.join(PATIENT_TEXT_KEYS)} must be strings")
        representatives = entry.get("representatives", [])
        if not isinstance(representatives, list) or not all(isinstance(value, str) for value in representatives):
            raise ConfigError(f"{where}.representatives: a list of INS is expected")
        try:
            parents = tuple(validate_ins(value) for value in representatives)
        except InvalidIns as exc:
            raise ConfigError(f"{where}.representatives: {exc}") from exc
        patients.append(NewPatient(ins=ins, state=PatientState(state), representatives=parents, **names))
    return patients


def open_store(settings: BridgeSettings) -> BridgeStore:
    return BridgeStore(settings.database_url, settings.path(settings.blob_dir), policy=settings.space_policy)


def seed_patients(settings: BridgeSettings, store: BridgeStore) -> list[str]:
    """Add patients.json's patients that the store does not know; their INS."""
    if settings.patients_file is None:
        return []
    path = settings.path(settings.patients_file)
    try:
        return store.seed(read_patients_file(path), actor="patients-file")
    except PatientNotFound as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _hostname(settings: BridgeSettings) -> str:
    """The name in our greeting: the CN of our certificate (what peers see in the TLS handshake)."""
    try:
        cert = x509.load_pem_x509_certificate(settings.path(settings.cert).read_bytes())
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(names[0].value) if names else "mes-bridge"
    except (OSError, ValueError):
        return "mes-bridge"


def open_annuaire_of(home: Path) -> Annuaire | None:
    """The operator's annuaire (same HOME and config.toml): the dossier names who deposited a document.
    Without a usable [annuaire] (a HOME configured for the bridge alone, say) the bridge runs on, showing
    the names the messages carry."""
    try:
        return open_annuaire(load_annuaire_settings(home), home.resolve())
    except (ConfigError, AnnuaireUnavailable) as exc:
        log.warning("no annuaire: document authors are named as their messages say (%s)", exc)
        return None


def session_key(settings: BridgeSettings) -> bytes:
    """The web session cookie's key: 32 random bytes in a 0600 file, made at the first start."""
    path = settings.path(settings.web_session_key_file)
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(key)
    if len(key) != 32:
        raise ConfigError(f"{path}: bridge.web_session_key_file must hold exactly 32 bytes")
    return key


def filing_limits(settings: BridgeSettings) -> FilingLimits:
    return FilingLimits(max_document_size=settings.max_document_size, max_documents=settings.max_documents_per_message,
                        max_total=settings.max_filed_per_message)


class BridgeService:
    """The bridge's listeners (LMTP, registry, web) and its outbox sender in one event loop;
    :meth:`start` then :meth:`stop`, or :meth:`run`."""

    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings
        self.store = open_store(settings)
        self.gate = OperatorGate.load(settings)
        self.tls = server_tls(settings)
        self.annuaire = open_annuaire_of(settings.home)
        self.outbox = OutboxSender(self.store, settings)
        self.pool = AnalysisPool(settings.intake_workers)
        self._acceptor: Acceptor | None = None
        self._runner: web.AppRunner | None = None
        self._web_runner: web.AppRunner | None = None
        self._lifecycle: asyncio.Task[None] | None = None
        self.ports: dict[str, int] = {}  # listener name -> bound port (a configured 0 is resolved)
        self.addresses: dict[str, str] = {}

    async def start(self) -> None:
        added = await asyncio.to_thread(seed_patients, self.settings, self.store)
        if added:
            log.info("patients seeded count=%d", len(added))
        listeners = self.settings.listeners
        if listeners.lmtp is not None:
            sock = bind_listener(listeners.lmtp.host, listeners.lmtp.port)
            limits = LimitsSettings()
            limiter = ConnectionLimiter(limits.max_connections, limits.max_connections_per_ip)
            factory = lmtp_factory(self.store, self.gate, hostname=_hostname(self.settings),
                                   max_message_size=self.settings.max_message_size, limiter=limiter,
                                   annuaire=self.annuaire, filing=filing_limits(self.settings), pool=self.pool)
            self._acceptor = Acceptor(sock, factory, tls=self.tls)
            self._acceptor.start()
            self.ports["lmtp"] = self._acceptor.port
            self.addresses["lmtp"] = f"{listeners.lmtp.host}:{self._acceptor.port}"
        if listeners.registry is not None:
            sock = bind_listener(listeners.registry.host, listeners.registry.port)
            self.ports["registry"] = int(sock.getsockname()[1])
            self.addresses["registry"] = f"{listeners.registry.host}:{self.ports['registry']}"
            self._runner = await start_registry(make_app(self.store, self.gate), sock, self.tls)
        if listeners.web is not None:
            sock = bind_listener(listeners.web.host, listeners.web.port)
            self.ports["web"] = int(sock.getsockname()[1])
            self.addresses["web"] = f"{listeners.web.host}:{self.ports['web']}"
            app = make_web_app(self.store, self.settings, annuaire=self.annuaire,
                               session_key=session_key(self.settings))
            self._web_runner = await start_web(app, sock, web_tls(self.settings))
        self.outbox.start()
        self._lifecycle = asyncio.create_task(self._lifecycle_loop(), name="space lifecycle")
        log.info("bridge ready %s", " ".join(f"{name}={where}" for name, where in self.addresses.items()))

    async def run_lifecycle(self) -> tuple[list[str], list[str]]:
        """Once: create by default the spaces whose opt-out window ended, purge archives past retention."""
        created = await asyncio.to_thread(self.store.end_windows)
        purged = await asyncio.to_thread(self.store.purge)
        if created or purged:
            log.info("space lifecycle created_by_default=%d purged=%d", len(created), len(purged))
        return created, purged

    async def _lifecycle_loop(self) -> None:
        while True:
            try:
                await self.run_lifecycle()
            except Exception:  # the store failing now is retried at the next tick; the loop never dies
                log.exception("space lifecycle run failed")
            await asyncio.sleep(self.settings.lifecycle_interval)

    async def stop(self) -> None:
        if self._lifecycle is not None:
            self._lifecycle.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lifecycle
            self._lifecycle = None
        await self.outbox.stop()
        if self._web_runner is not None:
            await self._web_runner.cleanup()
            self._web_runner = None
        if self._acceptor is not None:
            self._acceptor.close()
            self._acceptor = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.pool.close()
        if self.annuaire is not None:
            await self.annuaire.close()
        self.store.close()

    async def reload(self) -> None:
        """Re-read the CRLs (SIGHUP), as the operator does; a bad file is logged and the old lists stay."""
        try:
            await asyncio.to_thread(self.gate.reload)
        except (OSError, ValueError) as exc:
            log.error("CRLs not reloaded, the previous ones stay in force: %s", exc)
            return
        log.info("CRLs reloaded")

    async def run(self) -> None:
        """Serve until SIGTERM or SIGINT (SIGHUP re-reads the CRLs), then close the listeners."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload()))
        try:
            await self.start()
            await stop.wait()
            log.info("bridge stopping")
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            await self.stop()
