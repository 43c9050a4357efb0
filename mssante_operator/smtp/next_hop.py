"""Where to deliver a domain's mail: a static route, else its MX records (RFC 5321 5.1).

Static routes come first because inside a trust space operators often agree on relays that DNS
does not show (and tests and demos have no DNS at all). Otherwise the MX records are tried by
preference; a domain without MX is its own mail host (its A/AAAA records). Failures say whether
retrying can help: a domain that does not exist, or that publishes a null MX (RFC 7505), is
permanent; a DNS timeout or a failing server is temporary.
"""

from __future__ import annotations

import random
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver

from ..trust_space.liste_blanche import normalise_domain

SMTP_PORT = 25
_ROUTE = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]\s]+))(?::(?P<port>\d{1,5}))?")

# (name, rdtype) -> the records' texts; [] when the name exists without such records.
# Raises dnspython's NXDOMAIN, or another DNSException for temporary failures.
Lookup = Callable[[str, str], Awaitable[list[str]]]


@dataclass(frozen=True)
class NextHop:
    host: str
    port: int = SMTP_PORT

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class NextHopError(Exception):
    """No host to deliver to; ``temporary`` says whether a later attempt may succeed."""

    def __init__(self, temporary: bool, text: str) -> None:
        super().__init__(text)
        self.temporary = temporary
        self.text = text


def parse_route(value: str) -> NextHop:
    """``host:port``, ``[v6]:port`` or a bare host (port 25); raises ValueError on anything else."""
    match = _ROUTE.fullmatch(value.strip())
    port = int(match["port"] or SMTP_PORT) if match else 0
    if match is None or not 0 < port < 65536:
        raise ValueError(f"route {value!r} is not host:port")
    return NextHop(match["v6"] or match["host"], port)


def dns_lookup(timeout: float) -> Lookup:
    """A :data:`Lookup` on the system's resolvers (dnspython's asyncio resolver)."""

    async def lookup(name: str, rdtype: str) -> list[str]:
        try:
            answer = await dns.asyncresolver.resolve(name, rdtype, lifetime=timeout, search=False)
        except dns.resolver.NoAnswer:
            return []
        return [record.to_text() for record in answer]

    return lookup


class NextHops:
    """Next hops of a domain: static routes (``{"domain": "host:port"}``) first, then DNS."""

    def __init__(self, routes: Mapping[str, str], *, dns_timeout: float = 5.0, lookup: Lookup | None = None) -> None:
        self.routes = {normalise_domain(domain): parse_route(value) for domain, value in routes.items()}
        self._lookup = lookup or dns_lookup(dns_timeout)

    async def resolve(self, domain: str) -> list[NextHop]:
        """Hosts to try in order; raises NextHopError."""
        domain = normalise_domain(domain)
        route = self.routes.get(domain)
        if route is not None:
            return [route]
        mx = await self._query(domain, "MX")
        if mx:
            return _mx_hosts(domain, mx)
        if await self._query(domain, "A") or await self._query(domain, "AAAA"):
            return [NextHop(domain)]
        raise NextHopError(False, f"domain {domain} has neither MX nor address records")

    async def _query(self, domain: str, rdtype: str) -> list[str]:
        try:
            return await self._lookup(domain, rdtype)
        except dns.resolver.NXDOMAIN as exc:
            raise NextHopError(False, f"domain {domain} does not exist (DNS NXDOMAIN)") from exc
        except dns.exception.Timeout as exc:
            raise NextHopError(True, f"DNS lookup of {rdtype} {domain} timed out") from exc
        except dns.exception.DNSException as exc:
            raise NextHopError(True, f"DNS lookup of {rdtype} {domain} failed: {exc}") from exc


def _mx_hosts(domain: str, records: list[str]) -> list[NextHop]:
    """MX exchanges by preference; equal preferences shuffled to spread load (RFC 5321 5.1)."""
    parsed: list[tuple[int, str]] = []
    for record in records:
        preference, _, exchange = record.strip().partition(" ")
        try:
            parsed.append((int(preference), exchange.strip().rstrip(".")))
        except ValueError:
            continue
    if len(parsed) == 1 and parsed[0][1] == "":
        raise NextHopError(False, f"domain {domain} does not accept mail (null MX)")
    random.shuffle(parsed)
    parsed.sort(key=lambda item: item[0])
    hosts = [NextHop(exchange) for _, exchange in parsed if exchange]
    if not hosts:
        raise NextHopError(True, f"MX records of {domain} name no host")
    return hosts
