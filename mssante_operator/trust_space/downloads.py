"""Keeping the liste blanche and the CRLs fresh from the URLs of [trust_space].

Each source is downloaded when its file is missing or older than ``refresh_interval`` (the file's
mtime is when its good copy was obtained), checked, and only then written over the file atomically:
the liste blanche must come over https, match the SHA-256 that ANS publishes beside it and parse; a
CRL must parse, be signed by a CA of the bundle, not be past its nextUpdate, and neither change issuer
nor go back in time. Anything else keeps the last good copy in service, with one log line saying why;
a failed source is tried again after ``RETRY_AFTER`` rather than a whole interval later.

One process per node downloads (the single process, or worker 0, and ``serve --prepare`` at start);
the others re-read the files on SIGHUP, which the supervisor forwards to every worker and to mes_bridge.
"""

from __future__ import annotations

import hashlib
import logging
import re
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypeVar

from mssante_base.fetch import http_get, shown_url, write_atomically
from mssante_base.trust.revocation import RevocationError, load_certificates, parse_crl, verify_crl

from ..config import Settings
from .liste_blanche import ListeBlancheError, parse_liste_blanche

log = logging.getLogger(__name__)

MAX_BYTES = 64 * 1024 * 1024  # the 2025 liste blanche is ~3 MB; IGC-Santé CRLs are far smaller
CHECKSUM_MAX_BYTES = 4096
TIMEOUT = 120.0  # a whole download, not only each read
RETRY_AFTER = 900.0  # a failed source is tried again this long after (or at the next interval, if sooner)
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
T = TypeVar("T")


class SourceRefused(ValueError):
    """What was downloaded is not fit to replace the file (or could not be downloaded)."""


@dataclass(frozen=True)
class Source:
    """One file of the trust space and where its fresh copy comes from."""

    kind: Literal["liste blanche", "CRL"]
    path: Path
    url: str
    checksum_url: str = ""  # the liste blanche's SHA-256

    @property
    def what(self) -> str:
        """How log lines name it: "liste blanche", "CRL certs/trust-ca.crl.pem"."""
        return self.kind if self.kind == "liste blanche" else f"CRL {self.path.name}"


@dataclass(frozen=True)
class Outcome:
    source: Source
    replaced: bool
    error: str = ""


def _expected_sha256(text: bytes) -> str:
    """The digest of a checksum file: a bare SHA-256 (ANS's ``checksum``) or ``sha256sum``'s "HASH  NAME"."""
    words = text.decode("ascii", "replace").split()
    if not words or not _SHA256.match(words[0]):
        raise SourceRefused("the checksum file holds no SHA-256")
    return words[0].lower()


def _current(path: Path, parse: Callable[[bytes], T]) -> T | None:
    """The parsed file in place, or None when there is none usable (then anything valid may replace it)."""
    try:
        return parse(path.read_bytes())
    except (OSError, ValueError):
        return None


class TrustDownloads:
    """Downloads the configured sources of one HOME, checks them and replaces their files."""

    def __init__(self, settings: Settings, *, tls: ssl.SSLContext | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        ts = settings.trust_space
        self.interval = ts.refresh_interval
        self._ca_bundle = settings.path(ts.ca_bundle)
        self._tls = tls
        self._clock = clock
        self._failed_at: dict[Path, float] = {}
        self.sources: list[Source] = []
        if ts.liste_blanche_url:
            self.sources.append(Source("liste blanche", settings.path(ts.liste_blanche), ts.liste_blanche_url,
                                       ts.liste_blanche_checksum_url))
        for path, url in zip(ts.crl_files, ts.crl_urls, strict=False):
            if url:
                self.sources.append(Source("CRL", settings.path(path), url))

    # -- when -----------------------------------------------------------------------------------

    def _next_at(self, source: Source) -> float:
        """When ``source`` is due: its file's mtime + interval (now if missing), later after a failure."""
        try:
            due = source.path.stat().st_mtime + self.interval
        except OSError:
            due = 0.0
        failed = self._failed_at.get(source.path)
        if failed is not None:
            due = max(due, failed + self.retry_delay)
        return due

    @property
    def retry_delay(self) -> float:
        return min(RETRY_AFTER, self.interval)

    def due(self) -> list[Source]:
        now = self._clock()
        return [source for source in self.sources if self._next_at(source) <= now]

    def delay(self) -> float:
        """Seconds until a source is due (the interval when there is none)."""
        if not self.sources:
            return self.interval
        return max(0.0, min(self._next_at(source) for source in self.sources) - self._clock())

    # -- what -----------------------------------------------------------------------------------

    def refresh(self, sources: Iterable[Source] | None = None) -> list[Outcome]:
        """Download, check and install ``sources`` (default: the due ones); blocking, one log line each."""
        outcomes = []
        for source in self.due() if sources is None else sources:
            try:
                data = self._checked(source)
                write_atomically(source.path, data)
            except (SourceRefused, OSError) as exc:
                self._failed_at[source.path] = self._clock()
                log.error("%s not downloaded from %s, keeping the last good copy (%s): %s", source.what,
                          shown_url(source.url), self._copy_age(source.path), exc)
                outcomes.append(Outcome(source, replaced=False, error=str(exc)))
                continue
            self._failed_at.pop(source.path, None)
            log.info("%s downloaded from %s (%d bytes)", source.what, shown_url(source.url), len(data))
            outcomes.append(Outcome(source, replaced=True))
        return outcomes

    def _copy_age(self, path: Path) -> str:
        try:
            hours = (self._clock() - path.stat().st_mtime) / 3600
        except OSError:
            return "none yet"
        return f"obtained {hours:.1f} h ago"

    def _checked(self, source: Source) -> bytes:
        data = http_get(source.url, timeout=TIMEOUT, max_bytes=MAX_BYTES, tls=self._tls)
        if source.kind == "liste blanche":
            return self._checked_liste_blanche(source, data)
        return self._checked_crl(source, data)

    def _checked_liste_blanche(self, source: Source, data: bytes) -> bytes:
        expected = _expected_sha256(http_get(source.checksum_url, timeout=TIMEOUT, max_bytes=CHECKSUM_MAX_BYTES,
                                             tls=self._tls, accept="text/plain"))
        if hashlib.sha256(data).hexdigest() != expected:
            raise SourceRefused("its SHA-256 differs from the published checksum")
        try:
            fresh = parse_liste_blanche(data)
        except ListeBlancheError as exc:
            raise SourceRefused(f"not a usable liste blanche: {exc}") from exc
        current = _current(source.path, parse_liste_blanche)
        old = None if current is None else current.generated
        if old is not None and fresh.generated is not None and fresh.generated < old:
            raise SourceRefused(f"generated {fresh.generated:%Y-%m-%dT%H:%M:%SZ}, before the copy in service")
        return data

    def _checked_crl(self, source: Source, data: bytes) -> bytes:
        try:
            fresh = parse_crl(data)
        except ValueError as exc:
            raise SourceRefused(f"not a CRL: {exc}") from exc
        try:
            verify_crl(fresh, load_certificates(self._ca_bundle))
        except RevocationError as exc:
            raise SourceRefused(str(exc)) from exc
        next_update = fresh.next_update_utc
        if next_update is not None and next_update < datetime.now(UTC):
            raise SourceRefused(f"expired: its nextUpdate {next_update:%Y-%m-%dT%H:%M:%SZ} is past")
        current = _current(source.path, parse_crl)
        if current is not None:
            if current.issuer != fresh.issuer:
                raise SourceRefused(f"issued by {fresh.issuer.rfc4514_string()}, not by the CRL's CA in service")
            if fresh.last_update_utc < current.last_update_utc:
                raise SourceRefused(f"issued {fresh.last_update_utc:%Y-%m-%dT%H:%M:%SZ}, "
                                    "before the CRL in service")
        return data


def download_stale(settings: Settings) -> None:
    """At start, before the files are loaded: download those missing or older than refresh_interval."""
    TrustDownloads(settings).refresh()
