"""The operator's questions to mes_bridge's registry: what is the state of this patient's space?

Asked at RCPT time for every patient recipient not in the cache, over HTTPS with mutual TLS: we present the operator's
certificate, the bridge must present a certificate of the trust space whose subject is the configured
``bridge_dn`` (a certificate merely chaining to the CA is not enough: any operator has one). Answers are
kept ``ttl`` seconds (states change rarely: a patient activates or closes a space) and concurrent
questions for one INS share one request. A registry that cannot answer is a temporary failure (451 4.4.1):
the sender retries, nothing is refused for good because the bridge was down.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import ssl
import time
import urllib.parse
from collections.abc import Callable

from cachetools import TTLCache
from cryptography import x509

from mssante_base.errors import Refusal, TemporaryFailure
from mssante_base.patients.ins import Ins
from mssante_base.patients.states import PatientState
from mssante_base.single_flight import SingleFlight
from mssante_base.trust.dn import NormalDn, name_to_dn

from .. import metrics

log = logging.getLogger(__name__)

REGISTRY_DOWN = Refusal(
    451, "4.4.1",
    "The Mon espace santé registry cannot be reached now to check the patient's space; please try again later",
)


class RegistryUnavailable(TemporaryFailure):
    """The registry did not answer, answered garbage, or is not the bridge we trust."""


class PatientRegistry:
    """Asks the bridge's registry for patient-space states, with a short cache."""

    def __init__(self, url: str, tls: ssl.SSLContext, *, bridge_dn: NormalDn, ttl: float = 30.0,
                 timeout: float = 5.0, size: int = 50_000, clock: Callable[[], float] = time.monotonic) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "https" or not parsed.hostname:
            raise ValueError(f"{url!r} is not an https:// URL")
        tls.check_hostname = False  # the bridge is known by its DN (checked below), not by the name we dial
        tls.verify_mode = ssl.CERT_REQUIRED
        self._host, self._port, self._base = parsed.hostname, parsed.port or 443, parsed.path.rstrip("/")
        self._tls = tls
        self._bridge_dn = bridge_dn
        self._timeout = timeout
        self._cache: TTLCache[str, PatientState] | None = (
            TTLCache(maxsize=size, ttl=ttl, timer=clock) if ttl > 0 else None)
        self._flights = SingleFlight()

    async def state(self, ins: Ins) -> PatientState:
        """The state of ``ins``'s space; raises RegistryUnavailable when the registry cannot say."""
        if self._cache is not None and (cached := self._cache.get(ins.value)) is not None:
            return cached
        state, fetched = await self._flights.run(
            ins.value, lambda: metrics.timed_registry(asyncio.to_thread(self._fetch, ins)))
        if fetched and self._cache is not None:
            self._cache[ins.value] = state
        return state

    def _fetch(self, ins: Ins) -> PatientState:
        status, body = self._get(f"/v1/patients/{ins.value}")
        if status not in (200, 404):
            raise RegistryUnavailable(f"registry answered HTTP {status}")
        try:
            return PatientState(json.loads(body)["state"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryUnavailable("registry answered without a known state") from exc

    def health(self) -> None:
        """Ask ``/v1/health`` (for `check`); raises RegistryUnavailable unless the bridge answers 200."""
        status, _ = self._get("/v1/health")
        if status != 200:
            raise RegistryUnavailable(f"registry answered HTTP {status}")

    def _get(self, path: str) -> tuple[int, bytes]:
        """One GET on a fresh connection whose certificate is checked before the question is asked.

        (A blocking client in a thread: it lets us see the server's certificate before sending anything,
        which aiohttp's pooled client does not expose. Answers are cached, so this runs rarely.)
        """
        connection = http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout, context=self._tls)
        try:
            connection.connect()
            self._check_server(connection.sock)
            connection.request("GET", f"{self._base}{path}", headers={"Accept": "application/json"})
            response = connection.getresponse()
            return response.status, response.read(64 * 1024)
        except (OSError, http.client.HTTPException) as exc:
            log.warning("patients' registry unreachable: %s", exc or type(exc).__name__)
            raise RegistryUnavailable(f"registry unreachable: {exc or type(exc).__name__}") from exc
        finally:
            connection.close()

    def _check_server(self, sock: ssl.SSLSocket) -> None:
        """The registry must be the bridge: its certificate's subject is ``bridge_dn``."""
        der = sock.getpeercert(binary_form=True)
        subject = x509.load_der_x509_certificate(der).subject if der else None
        if subject is None or name_to_dn(subject) != self._bridge_dn:
            shown = subject.rfc4514_string() if subject is not None else "no certificate"
            log.error("patients' registry presented %s, not the configured bridge DN", shown)
            raise RegistryUnavailable("the registry's certificate is not the bridge's")
