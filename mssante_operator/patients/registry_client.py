"""The operator's questions to mes_bridge's registry: what is the state of this patient's space?

Asked at RCPT time for every patient recipient, over HTTPS with mutual TLS: we present the operator's
certificate, the bridge must present a certificate of the trust space whose subject is the configured
``bridge_dn`` (a certificate merely chaining to the CA is not enough: any operator has one). Answers are
kept ``ttl`` seconds (states change rarely: a patient activates or closes a space) and concurrent
questions for one INS share one request. A registry that cannot answer is a temporary failure (451 4.4.1):
the sender retries, nothing is refused for good because the bridge was down.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable

import aiohttp
from cachetools import TTLCache
from cryptography import x509

from ..errors import Refusal, TemporaryFailure
from ..single_flight import SingleFlight
from ..trust_space.dn import NormalDn, name_to_dn
from .ins import Ins
from .states import PatientState

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
        self._url = url.rstrip("/")
        self._tls = tls
        self._bridge_dn = bridge_dn
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._cache: TTLCache[str, PatientState] | None = (
            TTLCache(maxsize=size, ttl=ttl, timer=clock) if ttl > 0 else None)
        self._flights = SingleFlight()
        self._session: aiohttp.ClientSession | None = None

    async def state(self, ins: Ins) -> PatientState:
        """The state of ``ins``'s space; raises RegistryUnavailable when the registry cannot say."""
        if self._cache is not None and (cached := self._cache.get(ins.value)) is not None:
            return cached
        state, fetched = await self._flights.run(ins.value, lambda: self._fetch(ins))
        if fetched and self._cache is not None:
            self._cache[ins.value] = state
        return state

    async def _fetch(self, ins: Ins) -> PatientState:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(ssl=self._tls, limit=20))
        try:
            async with self._session.get(f"{self._url}/v1/patients/{ins.value}") as response:
                self._check_server(response)
                if response.status not in (200, 404):
                    raise RegistryUnavailable(f"registry answered HTTP {response.status}")
                body = await response.json()
        except RegistryUnavailable:
            raise
        except (aiohttp.ClientError, TimeoutError, ValueError, OSError) as exc:
            log.warning("patients' registry unreachable: %s", exc or type(exc).__name__)
            raise RegistryUnavailable(f"registry unreachable: {exc or type(exc).__name__}") from exc
        try:
            return PatientState(body["state"]) if isinstance(body, dict) else PatientState("?")
        except (KeyError, ValueError) as exc:
            raise RegistryUnavailable("registry answered without a known state") from exc

    def _check_server(self, response: aiohttp.ClientResponse) -> None:
        """The registry must be the bridge: its certificate's subject is ``bridge_dn``."""
        connection = response.connection
        ssl_object = connection.transport.get_extra_info("ssl_object") if connection and connection.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der is None:
            raise RegistryUnavailable("cannot see the registry's certificate")
        subject = x509.load_der_x509_certificate(der).subject
        if name_to_dn(subject) != self._bridge_dn:
            log.error("patients' registry presented %s, not the configured bridge DN", subject.rfc4514_string())
            raise RegistryUnavailable("the registry's certificate is not the bridge's")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
