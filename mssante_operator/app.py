"""Builds the operator from its settings and runs its listeners and timers."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import ssl
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from mssante_base.annuaire import Annuaire
from mssante_base.annuaire.factory import open_annuaire
from mssante_base.connection_limits import ConnectionLimiter, KeyedCounter
from mssante_base.listening import Acceptor, WorkerLoad, bind_listener
from mssante_base.memory import trim_periodically
from mssante_base.ratelimit import FailureLimiter
from mssante_base.smtp.server import GuardedSMTP, recipient_failures
from mssante_base.trust.dn import parse_dn
from mssante_base.trust.tls import client_context, server_context

from .auth.authenticator import Authenticator
from .auth.passwords import CredentialStore
from .auth.tokens import TokenValidator
from .config import ListenerSettings, Settings
from .imap.guard import AccountGuard
from .imap.server import ImapConnection, ImapLimits
from .imap.session import ServerContext
from .imap.watcher import FolderWatcher
from .listening import (
    HTTPS_LISTENERS,
    METRICS_LISTENER,
    MTA_LISTENERS,
    SUBMISSION_LISTENERS,
    configured_listeners,
)
from .metrics import MeasuredAnnuaire, MetricsEndpoint, StateCollector, scrape_registry
from .patients.registry_client import PatientRegistry
from .smtp.group_commit import GroupCommit
from .smtp.lmtp_client import LmtpClient
from .smtp.local_delivery import LocalDelivery
from .smtp.mta import MtaContext, MtaHandler
from .smtp.next_hop import NextHops
from .smtp.notices import Notices
from .smtp.outbound import OutboundClient
from .smtp.patient_path import PatientPath
from .smtp.queue import QueueRunner
from .smtp.submission import SubmissionContext, SubmissionHandler, SubmissionSMTP
from .smtp.targets import DeliveryTargets
from .store.accounts import ImportedAccount
from .store.facade import NewMessage, Store
from .store.queue import OutboundEnvelope, QueuedRecipient
from .store.submission import Submission, SubmissionResult, Submissions
from .trust_space.dkim import DnsKeys, KeySource, StaticKeys
from .trust_space.dkim_signing import DkimSigner
from .trust_space.downloads import TrustDownloads
from .trust_space.space import TrustSpace

if TYPE_CHECKING:
    from aiohttp.web import AppRunner

log = logging.getLogger(__name__)

# At shutdown, IMAP sessions get this long to finish the command they are running once told BYE.
IMAP_SHUTDOWN_GRACE = 10.0


def dkim_key_source(settings: Settings) -> KeySource:
    dkim = settings.dkim
    if dkim.key_source == "static":
        return StaticKeys(dkim.static_keys)
    return DnsKeys(timeout=dkim.dns_timeout)


def _server_tls(settings: Settings, *, client_cert: bool = True) -> ssl.SSLContext:
    return server_context(settings.path(settings.tls.cert), settings.path(settings.tls.key),
                          settings.path(settings.trust_space.ca_bundle), client_cert=client_cert)


def _dkim_signer(settings: Settings) -> DkimSigner:
    dkim = settings.dkim
    return DkimSigner(settings.operator.domain, dkim.selector, settings.path(dkim.private_key).read_bytes())


def check_start_up(settings: Settings) -> None:
    """Load what a worker needs (certificates, DKIM key, liste blanche, CRLs, annuaire, next hops); raise on the
    first problem."""
    _server_tls(settings)
    _dkim_signer(settings)
    NextHops(settings.outbound.routes)
    TrustSpace(settings)
    open_annuaire(settings.annuaire, settings.home)
    if settings.patients is not None:
        try:
            parse_dn(settings.patients.bridge_dn)
        except ValueError as exc:
            raise ValueError(f"patients.bridge_dn: {exc}") from exc
    if settings.bridge is not None:  # mes_bridge starts beside us: its table must be valid too
        from .bridge import bridge_settings

        bridge_settings(settings)


def prepare_store(settings: Settings) -> None:
    """Schema migrations, the blob storage check and orphan clean-up, the one-time import of credentials.json:
    done once before any worker starts."""
    store = Store(settings.database_url, settings.path(settings.storage.blob_dir))
    try:
        _prepare(store)
        if _credentials_to_import(settings, store) is not None:
            asyncio.run(_import_with_annuaire(settings, store))
    finally:
        store.close()


def _credentials_to_import(settings: Settings, store: Store) -> Path | None:
    """HOME's credentials.json when it exists and the store has no account yet (the first start)."""
    path = settings.path(settings.auth.credentials)
    return path if path.is_file() and not store.accounts.exist() else None


async def _import_with_annuaire(settings: Settings, store: Store) -> None:
    annuaire = open_annuaire(settings.annuaire, settings.home)
    try:
        await import_credentials(settings, store, annuaire)
    finally:
        await annuaire.close()


async def import_credentials(settings: Settings, store: Store, annuaire: Annuaire) -> None:
    """First start only: HOME's credentials.json (address -> argon2 hash, what the demo kit writes) becomes
    the store's accounts, each with the kind the annuaire gives it (audited). The file is not read again:
    ``mssante-operator account`` manages the accounts. Raises ValueError on a file that is not that mapping."""
    path = await asyncio.to_thread(_credentials_to_import, settings, store)
    if path is None:
        return
    try:
        hashes = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"credentials file {path} cannot be imported: {exc}") from exc
    if not isinstance(hashes, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in hashes.items()):
        raise ValueError(f"credentials file {path} must map addresses to hash strings")
    entries = []
    for address, password_hash in hashes.items():
        entry = await annuaire.lookup(address.strip().lower())
        if entry is None:
            log.warning("credentials file %s: %s is not in the annuaire, not imported", path, address)
            continue
        entries.append(ImportedAccount(entry.address, entry.kind.value, password_hash))
    count = await asyncio.to_thread(store.accounts.import_once, entries, source=path.name, at=store.now())
    if count is not None:
        log.info("imported %d accounts from %s; the file is no longer read (see mssante-operator account)",
                 count, path)


def _prepare(store: Store) -> None:
    """Migrate (BlobStorageMismatch: refuse to start), then collect the files an interrupted delivery left."""
    store.migrate()
    removed = store.collect_orphan_blobs()
    if removed:
        log.info("removed %d orphan blobs left by an interrupted delivery", removed)


class Operator:
    """Every service of one HOME: MTA listeners over a store, an annuaire and the trust space."""

    def __init__(
        self,
        settings: Settings,
        *,
        inherited: dict[str, socket.socket] | None = None,
        load: WorkerLoad | None = None,
    ) -> None:
        """Worker mode: ``inherited`` listening sockets and the shared ``load`` come from a supervisor."""
        self.settings = settings
        self._inherited = inherited
        self._load = load
        self.store = Store(settings.database_url, settings.path(settings.storage.blob_dir))
        self.trust = TrustSpace(settings)
        self.annuaire = MeasuredAnnuaire(open_annuaire(settings.annuaire, settings.home))
        self.delivery = LocalDelivery(self.store)
        self.watcher = FolderWatcher(self.store)
        self.guard = AccountGuard(self.store.accounts)
        self.authenticator = self._authenticator()
        self.cpu = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cpu")
        self._acceptors: list[Acceptor] = []
        self._https: list[AppRunner] = []  # the autoconfig listener
        self._refresher: asyncio.Task[None] | None = None
        # One process per node downloads the trust files: a single process, or worker 0 of a supervisor.
        downloads = TrustDownloads(settings) if load is None or load.slot == 0 else None
        self._downloads = downloads if downloads is not None and downloads.sources else None
        self._downloader: asyncio.Task[None] | None = None
        self._trimmer: asyncio.Task[None] | None = None  # gives freed memory back (mssante_base/memory.py)
        self._imap_limiter: ConnectionLimiter | None = None
        self._recipient_failures = recipient_failures(settings.limits)  # per peer certificate, both MTA listeners
        self._imap_users = KeyedCounter(settings.imap.max_connections_per_user)
        self._imap_sessions: dict[ImapConnection, asyncio.Task[None]] = {}  # open ones, told BYE at stop()
        self._stopping = False
        self.signer = _dkim_signer(settings)
        # Same writer thread as local delivery: SQLite has one writer, and batches form while it is busy.
        self._commits: GroupCommit[Submission, SubmissionResult] = GroupCommit(
            Submissions(self.store).submit_many, self.delivery.executor, what="submission")
        self.patient_path = self._patient_path()
        self.notices = Notices(store=self.store, delivery=self.delivery, hostname=settings.operator.hostname,
                               domain=settings.operator.domain, delay_warning=settings.outbound.delay_warning,
                               local_domains=settings.operator.local_domains, relay=self._relay_report)
        self.queue_runner = self._queue_runner()
        self._background: set[asyncio.Task[None]] = set()
        self.mta_context = MtaContext(
            hostname=settings.operator.hostname,
            local_domains=settings.operator.local_domains,
            max_recipients=settings.limits.max_recipients,
            annuaire=self.annuaire,
            liste_blanche=self.trust.liste_blanche,
            revocations=self.trust.revocations,
            dkim_keys=dkim_key_source(settings),
            delivery=self.delivery,
            cpu_executor=self.cpu,
            patients=self.patient_path,
            commit=self._commits.submit,
            max_lifetime=settings.outbound.max_lifetime,
            on_queued=self.queue_runner.wake,
            relayed=self.store.queue.recipients_of,
        )
        self.submission_context = self._submission_context()

    def _client_tls(self) -> ssl.SSLContext:
        settings = self.settings
        return client_context(settings.path(settings.tls.cert), settings.path(settings.tls.key),
                              settings.path(settings.trust_space.ca_bundle))

    def _patient_path(self) -> PatientPath | None:
        """The patient checks (with the bridge's registry client), when [patients] is configured."""
        patients = self.settings.patients
        if patients is None:
            return None
        registry = PatientRegistry(patients.registry_url, self._client_tls(), bridge_dn=parse_dn(patients.bridge_dn),
                                   ttl=patients.state_cache_ttl, timeout=patients.registry_timeout)
        return PatientPath(registry, self.annuaire, self.store.conversations.status)

    def _submission_context(self) -> SubmissionContext:
        settings = self.settings
        return SubmissionContext(
            hostname=settings.operator.hostname,
            local_domains=settings.operator.local_domains,
            max_recipients=settings.submission.max_recipients,
            annuaire=self.annuaire,
            authenticator=self.authenticator,
            liste_blanche=self.trust.liste_blanche,
            signer=self.signer,
            commit=self._commits.submit,
            max_lifetime=settings.outbound.max_lifetime,
            sent_copy=settings.submission.sent_copy,
            cpu_executor=self.cpu,
            on_queued=self.queue_runner.wake,
            on_local_success=self._send_receipt,
            patients=self.patient_path,
        )

    async def _relay_report(self, report: bytes, message: NewMessage, recipient: str) -> None:
        """A DSN for a sender who is not ours (a patient, a peer's professional): signed, then queued."""
        loop = asyncio.get_running_loop()
        signature = await loop.run_in_executor(self.cpu, self.signer.sign, report)
        signed = replace(message, raw=signature + report)
        expires = message.received_at + timedelta(seconds=self.settings.outbound.max_lifetime)
        await self._commits.submit(Submission(
            message=signed, expires_at=expires,
            outbound=OutboundEnvelope(sender="", recipients=(QueuedRecipient(recipient),),
                                      message_id=message.message_id, submitted_by="notices"),
        ))
        self.queue_runner.wake()

    def _send_receipt(self, sender: str, message: NewMessage, addresses: list[str], envid: str | None) -> None:
        task = asyncio.get_running_loop().create_task(self.notices.local_success(sender, message, addresses, envid))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _queue_runner(self) -> QueueRunner:
        settings = self.settings
        outbound = settings.outbound
        client = OutboundClient(
            hostname=settings.operator.hostname,
            client_tls=self._client_tls(),
            liste_blanche=self.trust.liste_blanche,
            revocations=self.trust.revocations,
            hops=NextHops(outbound.routes, dns_timeout=settings.dkim.dns_timeout),
            per_peer_connections=outbound.per_peer_connections,
            connect_timeout=outbound.connect_timeout,
            command_timeout=outbound.command_timeout,
            idle_timeout=outbound.idle_timeout,
        )
        lmtp = None
        if settings.patients is not None:
            host, _, port = settings.patients.lmtp.rpartition(":")
            lmtp = LmtpClient(host=host, port=int(port), hostname=settings.operator.hostname,
                              client_tls=self._client_tls(), bridge_dn=parse_dn(settings.patients.bridge_dn),
                              connections=outbound.per_peer_connections, timeout=outbound.command_timeout,
                              idle_timeout=outbound.idle_timeout)
        owner = f"{settings.operator.hostname}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        return QueueRunner(store=self.store, client=DeliveryTargets(client, lmtp), settings=outbound,
                           notices=self.notices, owner=owner,
                           writer=self.delivery.executor)

    def _authenticator(self) -> Authenticator:
        auth = self.settings.auth
        tokens = None
        if auth.token_issuer:
            remote = auth.token_jwks.startswith("https://")
            jwks = auth.token_jwks if remote else self.settings.path(Path(auth.token_jwks))
            tokens = TokenValidator(auth.token_issuer, auth.token_audience, jwks, rpps_claim=auth.token_rpps_claim)
        credentials = CredentialStore(self.store.accounts, cache_ttl=auth.cache_ttl)
        patients = self.settings.patients
        return Authenticator(self.annuaire, credentials, tokens, FailureLimiter(),
                             bridge_dn=parse_dn(patients.bridge_dn) if patients is not None else None)

    async def _start_imap(self, name: str, listener: ListenerSettings) -> None:
        context = _server_tls(self.settings)
        implicit = listener.tls == "implicit"
        imap = self.settings.imap
        if self._imap_limiter is None:  # one count for all IMAP listeners of this process
            self._imap_limiter = ConnectionLimiter(imap.max_connections, imap.max_connections_per_ip, self._load)
        limiter = self._imap_limiter
        ctx = ServerContext(store=self.store, authenticator=self.authenticator, watcher=self.watcher,
                            hostname=self.settings.operator.hostname, append_limit=imap.append_limit,
                            user_connections=self._imap_users, guard=self.guard)
        limits = ImapLimits(max_line=imap.max_line, max_literal=imap.append_limit, login_timeout=imap.login_timeout,
                            autologout=imap.autologout, idle_timeout=imap.idle_timeout)

        async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connection = ImapConnection(ctx, reader, writer, tls_context=None if implicit else context,
                                        limits=limits, limiter=limiter)
            task = asyncio.current_task()
            assert task is not None
            self._imap_sessions[connection] = task
            try:
                await connection.serve()
            except asyncio.CancelledError:
                # stop() cancels a session still running IMAP_SHUTDOWN_GRACE after its BYE: it ends here,
                # quietly (StreamReaderProtocol's done-callback would log the cancellation as an error).
                if not self._stopping:
                    raise
            finally:
                self._imap_sessions.pop(connection, None)

        def factory() -> asyncio.StreamReaderProtocol:
            return asyncio.StreamReaderProtocol(asyncio.StreamReader(limit=imap.max_line + 1024), connected)

        sock = self._inherited.pop(name) if self._inherited else bind_listener(listener.host, listener.port)
        acceptor = Acceptor(sock, factory, tls=context if implicit else None, load=self._load)
        acceptor.start()
        self._acceptors.append(acceptor)
        log.info("listener %s up on %s:%d (%s TLS)", name, listener.host, acceptor.port, listener.tls)

    async def _start_smtp(self, name: str, listener: ListenerSettings) -> None:
        """An MTA or submission listener: GuardedSMTP (or its submission subclass) on an Acceptor."""
        loop = asyncio.get_running_loop()
        context = _server_tls(self.settings)
        implicit = listener.tls == "implicit"
        limits = self.settings.limits
        limiter = ConnectionLimiter(limits.max_connections, limits.max_connections_per_ip, self._load,
                                    stress_threshold=limits.stress_threshold)
        options = {"limits": limits, "limiter": limiter, "hostname": self.settings.operator.hostname,
                   "error_limits": True,
                   "tls_context": None if implicit else context, "require_starttls": not implicit, "loop": loop}
        if name in SUBMISSION_LISTENERS:
            submission_handler = SubmissionHandler(self.submission_context, listener=name)

            def factory() -> GuardedSMTP:
                return SubmissionSMTP(submission_handler, **options)  # type: ignore[arg-type]
        else:
            mta_handler = MtaHandler(self.mta_context, listener=name)

            def factory() -> GuardedSMTP:
                return GuardedSMTP(mta_handler, failures=self._recipient_failures, **options)  # type: ignore[arg-type]

        sock = self._inherited.pop(name) if self._inherited else bind_listener(listener.host, listener.port)
        acceptor = Acceptor(sock, factory, tls=context if implicit else None, load=self._load)
        acceptor.start()
        self._acceptors.append(acceptor)
        log.info("listener %s up on %s:%d (%s TLS)", name, listener.host, acceptor.port, listener.tls)

    def _start_metrics(self) -> None:
        """``GET /metrics`` on [metrics] listen (a socket shared by the workers, as the mail ports are)."""
        metrics = self.settings.metrics
        if metrics is None:
            return
        endpoint = MetricsEndpoint(scrape_registry(StateCollector(self.settings, self.store)))
        inherited = self._inherited.pop(METRICS_LISTENER, None) if self._inherited else None
        sock = inherited or bind_listener(metrics.host, metrics.port)
        acceptor = Acceptor(sock, endpoint.protocol)
        acceptor.start()
        self._acceptors.append(acceptor)
        log.info("listener metrics up on %s:%d (plain HTTP)", metrics.host, acceptor.port)

    async def _start_autoconfig(self, name: str, listener: ListenerSettings) -> None:
        """Thunderbird's autoconfig document over HTTPS: our chain, no client certificate asked."""
        from .autoconfig import start_autoconfig  # aiohttp's server: only in a worker that serves it

        sock = self._inherited.pop(name) if self._inherited else bind_listener(listener.host, listener.port)
        port = sock.getsockname()[1]
        self._https.append(await start_autoconfig(self.settings, sock, _server_tls(self.settings, client_cert=False)))
        log.info("listener %s up on %s:%d (HTTPS)", name, listener.host, port)

    async def start(self, *, prepare_store: bool = True) -> None:
        """Migrate the store (unless a supervisor did: then only check the blob storage is the database's),
        then open every configured listener."""
        if prepare_store:
            await asyncio.to_thread(_prepare, self.store)
            await import_credentials(self.settings, self.store, self.annuaire)
        else:
            await asyncio.to_thread(self.store.check_blob_storage)
        await self.watcher.start()
        self.guard.start()
        for name, listener in configured_listeners(self.settings).items():
            if name in MTA_LISTENERS or name in SUBMISSION_LISTENERS:
                await self._start_smtp(name, listener)
            elif name in HTTPS_LISTENERS:
                if self._load is None or self._load.slot == 0:
                    await self._start_autoconfig(name, listener)
                elif self._inherited:  # the first worker answers: aiohttp's server (~7 MB) stays out of the others
                    self._inherited.pop(name).close()
            else:
                await self._start_imap(name, listener)
        self._start_metrics()
        self._refresher = asyncio.create_task(self._refresh_periodically())
        self._trimmer = asyncio.create_task(trim_periodically())
        if self._downloads is not None:
            self._downloader = asyncio.create_task(self._download_periodically())
        self.queue_runner.start()

    def reload(self) -> None:
        """Re-read the liste blanche and the CRLs (SIGHUP and timer); connections stay up."""
        log.info("reloading the trust space")
        self.trust.reload()

    async def _refresh_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.trust_space.refresh_interval)
            self.reload()

    async def _download_periodically(self) -> None:
        assert self._downloads is not None
        # `serve` has just tried the due files (download_stale): a failed one waits for its retry delay.
        await asyncio.sleep(self._downloads.delay() or self._downloads.retry_delay)
        while True:
            await self.download_trust_files()
            await asyncio.sleep(self._downloads.delay())

    async def download_trust_files(self) -> None:
        """Download the due trust files; when one was replaced, have every process of the node re-read them.

        A worker asks its supervisor (SIGHUP), which forwards the reload to every worker and to mes_bridge.
        """
        if self._downloads is None:
            return
        outcomes = await asyncio.to_thread(self._downloads.refresh)
        if any(outcome.replaced for outcome in outcomes):
            if self._inherited is not None:
                os.kill(os.getppid(), signal.SIGHUP)
            else:
                self.reload()

    async def stop(self) -> None:
        """Stop accepting, say BYE to IMAP clients, finish commits in progress, close the store."""
        self._stopping = True
        for task in (self._refresher, self._downloader, self._trimmer):
            if task is not None:
                task.cancel()
        for acceptor in self._acceptors:
            acceptor.close()
        for runner in self._https:
            await runner.cleanup()
        await self._close_imap_sessions()
        await self.queue_runner.stop()
        if self._background:
            await asyncio.wait(self._background, timeout=10)
        await self.delivery.close()
        await self.watcher.stop()
        await self.guard.stop()
        self.cpu.shutdown(wait=False, cancel_futures=True)
        await self.annuaire.close()
        self.store.close()
        log.info("operator stopped" if self._inherited is None else "worker stopped")

    async def _close_imap_sessions(self) -> None:
        """BYE and close every IMAP connection, then wait for their sessions to end (before the store closes).

        Left to asyncio.run(), the sessions would be cancelled: cut without BYE, an error logged for each.
        """
        sessions = dict(self._imap_sessions)
        if not sessions:
            return
        log.info("closing %d IMAP connections", len(sessions))
        await asyncio.gather(*(connection.shutdown() for connection in sessions), return_exceptions=True)
        _, running = await asyncio.wait(sessions.values(), timeout=IMAP_SHUTDOWN_GRACE)
        for task in running:  # a command still running on a closed connection: nobody is left to answer
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=5)

    async def serve_forever(self, *, prepare_store: bool = True) -> None:
        """Run until SIGTERM or SIGINT; SIGHUP reloads the trust space."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        await self.start(prepare_store=prepare_store)
        log.info("operator %s ready", self.settings.operator.domain)
        try:
            await stop.wait()
        finally:
            log.info("stopping")
            await self.stop()
