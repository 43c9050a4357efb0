"""What the operator tells a monitoring system: Prometheus metrics, served as text at ``[metrics] listen``/metrics.

Labels are small, bounded sets (a listener, a check's name, an outcome, a protocol and mechanism, a CRL's
file name): never an address, an INS or a subject, which would both leak and grow without bound.

Several processes, one answer. Under the supervisor (``workers.py``) every worker and mes_bridge write their
counters to files in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode: HOME/.metrics), which the
supervisor empties at start and hands down to them. The supervisor binds the metrics port like the
mail ports and the workers share it: whichever worker accepts a scrape answers with every process's
figures, summed by ``MultiProcessCollector``, plus what it reads at scrape time (:class:`StateCollector`:
the queue, the ages of the certificate, CRLs and liste blanche). So the supervisor stays light (it never
imports prometheus_client but to forget a dead worker's gauges) and no extra process is needed. Without a
supervisor (one worker, no bridge) the one process answers from its own registry.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from mssante_base.annuaire import Annuaire, AnnuaireUnavailable, MailboxEntry

from .workers import MULTIPROC_VARIABLE

if TYPE_CHECKING:
    from .config import Settings
    from .store.facade import Store

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_T = TypeVar("_T")

SMTP_ACCEPTED = Counter("mssante_smtp_messages_accepted", "Messages accepted (250 after DATA), by listener.",
                        ["listener"])
SMTP_REFUSED = Counter("mssante_smtp_refusals", "Commands refused by a check, by listener, stage and check name.",
                       ["listener", "stage", "check"])
DELIVERIES = Counter("mssante_deliveries", "Delivery attempts of the outbound queue (peers and mes_bridge), by "
                     "outcome (delivered, temporary, permanent).", ["outcome"])
IMAP_SESSIONS = Gauge("mssante_imap_sessions", "IMAP connections open.", multiprocess_mode="livesum")
IMAP_IDLE = Gauge("mssante_imap_idle_clients", "IMAP clients in IDLE.", multiprocess_mode="livesum")
LOGIN_FAILURES = Counter("mssante_login_failures", "Failed logins, by protocol and SASL mechanism.",
                         ["protocol", "mechanism"])
ANNUAIRE_SECONDS = Histogram("mssante_annuaire_request_seconds", "Annuaire questions' latency, by operation.",
                             ["operation"], buckets=LATENCY_BUCKETS)
ANNUAIRE_ERRORS = Counter("mssante_annuaire_errors", "Annuaire questions left unanswered (unavailable).",
                          ["operation"])
REGISTRY_SECONDS = Histogram("mssante_registry_request_seconds", "mes_bridge registry questions' latency "
                             "(cache misses).", buckets=LATENCY_BUCKETS)
REGISTRY_ERRORS = Counter("mssante_registry_errors", "mes_bridge registry questions left unanswered.")


def refused(listener: str, stage: str, check: str | None) -> None:
    """Count one refusal; ``check`` is the refusing check's name (None: the commit after the checks)."""
    SMTP_REFUSED.labels(listener, stage, check or "commit").inc()


async def measured(question: Awaitable[_T], seconds: Histogram, errors: Counter,
                   failures: tuple[type[BaseException], ...] = (Exception,)) -> _T:
    """Await ``question``, observing its latency in ``seconds`` and counting in ``errors`` the ``failures``."""
    start = time.perf_counter()
    try:
        return await question
    except failures:
        errors.inc()
        raise
    finally:
        seconds.observe(time.perf_counter() - start)


async def timed_registry(question: Awaitable[_T]) -> _T:
    """A registry question, measured (any failure is an error: the registry could not say)."""
    return await measured(question, REGISTRY_SECONDS, REGISTRY_ERRORS)


class MeasuredAnnuaire(Annuaire):
    """An annuaire whose every question is timed and whose unavailability is counted."""

    def __init__(self, inner: Annuaire) -> None:
        self.inner = inner

    async def _measured(self, operation: str, question: Awaitable[_T]) -> _T:
        return await measured(question, ANNUAIRE_SECONDS.labels(operation), ANNUAIRE_ERRORS.labels(operation),
                              (AnnuaireUnavailable,))

    async def lookup(self, address: str) -> MailboxEntry | None:
        return await self._measured("lookup", self.inner.lookup(address))

    async def search(self, text: str, limit: int = 50) -> list[MailboxEntry]:
        return await self._measured("search", self.inner.search(text, limit))

    async def by_rpps(self, rpps: str) -> list[MailboxEntry]:
        return await self._measured("by_rpps", self.inner.by_rpps(rpps))

    async def by_structure(self, structure_id: str) -> list[MailboxEntry]:
        return await self._measured("by_structure", self.inner.by_structure(structure_id))

    async def delegated_to(self, address: str) -> list[MailboxEntry]:
        return await self._measured("delegated_to", self.inner.delegated_to(address))

    async def close(self) -> None:
        await self.inner.close()


def _file_age(path: Path, now: float) -> float | None:
    try:
        return max(0.0, now - path.stat().st_mtime)
    except OSError:  # missing: the series disappears, which an alert on absence catches
        return None


class StateCollector:
    """What is read at scrape time: the outbound queue (one grouped query), and the ages of our certificate,
    the CRL files and the liste blanche (their files' mtime: a refresh writes a fresh good copy)."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store

    def collect(self) -> Iterator[Metric]:
        yield from self._queue()
        yield from self._trust_files()

    def _queue(self) -> Iterator[Metric]:
        by_state = GaugeMetricFamily("mssante_queue_recipients", "Outbound queue recipients by state (delivered "
                                     "and failed ones stay [outbound] keep_finished).", labels=["state"])
        oldest = GaugeMetricFamily("mssante_queue_oldest_age_seconds",
                                   "Age of the oldest message with a recipient still to deliver (0: none).")
        try:
            depth = self.store.queue.depth()
        except Exception:  # the database away for a moment: the scrape still says the rest
            log.exception("metrics: cannot read the queue depth")
            return
        for state, count in sorted(depth.recipients.items()):
            by_state.add_metric([state], count)
        age = (datetime.now(UTC) - depth.oldest_pending).total_seconds() if depth.oldest_pending else 0.0
        oldest.add_metric([], max(0.0, age))
        yield by_state
        yield oldest

    def _trust_files(self) -> Iterator[Metric]:
        settings, now = self.settings, time.time()
        expiry = GaugeMetricFamily("mssante_certificate_expiry_seconds",
                                   "Seconds until our certificate's notAfter (negative: expired).")
        if (not_after := _not_after(settings.path(settings.tls.cert))) is not None:
            expiry.add_metric([], not_after - now)
        yield expiry
        crls = GaugeMetricFamily("mssante_crl_age_seconds", "Age of each CRL file (since written).",
                                 labels=["file"])
        for crl in settings.trust_space.crl_files:
            if (age := _file_age(settings.path(crl), now)) is not None:
                crls.add_metric([crl.name], age)
        yield crls
        liste = GaugeMetricFamily("mssante_liste_blanche_age_seconds", "Age of the liste blanche file (since written).")
        if (age := _file_age(settings.path(settings.trust_space.liste_blanche), now)) is not None:
            liste.add_metric([], age)
        yield liste


def _not_after(path: Path) -> float | None:
    """Our certificate's notAfter (the chain file's first certificate), as a POSIX time."""
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc.timestamp()
    except (OSError, ValueError):
        return None


def scrape_registry(state: StateCollector) -> CollectorRegistry:
    """Every process's figures (multiprocess mode) or this process's, and the state read at scrape time."""
    registry = CollectorRegistry()
    directory = os.environ.get(MULTIPROC_VARIABLE)
    if directory:
        MultiProcessCollector(registry, path=directory)
    else:
        registry.register(REGISTRY)  # type: ignore[arg-type]  # a registry collects like a collector
    registry.register(state)  # type: ignore[arg-type]
    return registry


_HEAD_LIMIT = 8192
_READ_TIMEOUT = 10.0


class MetricsEndpoint:
    """``GET /metrics`` over plain HTTP/1.0-style exchanges (one request per connection), nothing else.

    A few lines instead of a web framework in every worker: Prometheus asks one thing, at a slow pace.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def protocol(self) -> asyncio.StreamReaderProtocol:
        return asyncio.StreamReaderProtocol(asyncio.StreamReader(limit=_HEAD_LIMIT), self._connected)

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT)
            method, _, rest = head.partition(b" ")
            path = rest.partition(b" ")[0].partition(b"?")[0]
            if method in (b"GET", b"HEAD") and path == b"/metrics":
                body = await asyncio.to_thread(generate_latest, self.registry)
                status, content_type = "200 OK", CONTENT_TYPE_LATEST
            else:
                body, status, content_type = b"not found: ask GET /metrics\n", "404 Not Found", "text/plain"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode("ascii"))
            if method != b"HEAD":
                writer.write(body)
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a client gone, slow or garbled: nothing to answer
        finally:
            writer.close()
