"""Mail client autoconfiguration: Thunderbird's ``config-v1.1.xml``, so that a doctor's client sets itself up from
the address alone (docs/client-setup.md: the DNS names that lead clients here, and RFC 6186's SRV records).

The document names our IMAP and submission listeners, the operator's host name and the login methods we take.
It is the same for every user of a domain: the user stands in it only as Thunderbird's ``%EMAILADDRESS%``
placeholder, filled in by the client, so nothing a client sends is ever written into it. The ``emailaddress``
query is only read for its domain, which must be one of ours (else 404, as any other domain's host name).
"""

from __future__ import annotations

import logging
import socket
import ssl
import string
import xml.etree.ElementTree as ET  # we only write XML here, never parse it
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from aiohttp import web

from mssante_base.https import start_https

if TYPE_CHECKING:
    from .config import Settings

log = logging.getLogger(__name__)

AUTOCONFIG_PATHS = ("/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml")
USERNAME = "%EMAILADDRESS%"  # Thunderbird's placeholder: the address the user typed
HOST_PREFIX = "autoconfig."  # Thunderbird asks https://autoconfig.DOMAIN/mail/config-v1.1.xml first
MAX_ADDRESS = 254  # RFC 5321 4.5.3.1.3: a path of 256 octets, angle brackets included
_SETUP_KEY: web.AppKey[ClientSetup] = web.AppKey("client_setup")
# (listener name, protocol), implicit TLS first (RFC 8314 3: preferred over STARTTLS).
_LISTENERS = (("imaps", "imap"), ("imap", "imap"), ("submissions", "smtp"), ("submission", "smtp"))
_ATEXT = frozenset(string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-")  # RFC 5322 3.2.3
_LABEL = frozenset(string.ascii_letters + string.digits + "-")


class NotAnAddress(ValueError):
    """The ``emailaddress`` query is no e-mail address (400)."""


@dataclass(frozen=True)
class MailServer:
    """One listener as a client sees it."""

    protocol: Literal["imap", "smtp"]
    port: int
    implicit_tls: bool


@dataclass(frozen=True)
class ClientSetup:
    """What the document says, for any of our domains."""

    hostname: str
    domains: tuple[str, ...]
    servers: tuple[MailServer, ...]
    oauth2: bool

    @classmethod
    def of(cls, settings: Settings) -> ClientSetup:
        """Our host name, local domains, IMAP and submission listeners, and whether bearer tokens are taken."""
        servers = []
        for name, protocol in _LISTENERS:
            listener = getattr(settings.listeners, name)
            if listener is not None:
                servers.append(MailServer(protocol, listener.port, implicit_tls=listener.tls == "implicit"))
        return cls(hostname=settings.operator.hostname, domains=tuple(settings.operator.local_domains),
                   servers=tuple(servers), oauth2=bool(settings.auth.token_issuer))

    def our_domain(self, name: str) -> str | None:
        """Our spelling of domain ``name`` (any case, trailing dot), None when it is not ours."""
        wanted = name.lower().rstrip(".")
        return next((domain for domain in self.domains if domain.lower() == wanted), None)


def render_client_config(setup: ClientSetup, domain: str) -> bytes:
    """The config-v1.1.xml document for ``domain`` (one of ours), UTF-8; ElementTree escapes every text."""
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=domain)
    for name in (domain, *(d for d in setup.domains if d != domain)):
        ET.SubElement(provider, "domain").text = name
    ET.SubElement(provider, "displayName").text = f"MSSanté — {domain}"
    ET.SubElement(provider, "displayShortName").text = domain
    methods = ["OAuth2"] if setup.oauth2 else []  # Thunderbird takes the first method it supports
    methods += ["password-cleartext", "TLS-client-cert"]  # password over TLS; or the user's certificate
    for protocol, tag in (("imap", "incomingServer"), ("smtp", "outgoingServer")):
        for server in (s for s in setup.servers if s.protocol == protocol):
            element = ET.SubElement(provider, tag, type=protocol)
            ET.SubElement(element, "hostname").text = setup.hostname
            ET.SubElement(element, "port").text = str(server.port)
            ET.SubElement(element, "socketType").text = "SSL" if server.implicit_tls else "STARTTLS"
            ET.SubElement(element, "username").text = USERNAME
            for method in methods:
                ET.SubElement(element, "authentication").text = method
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def requested_domain(setup: ClientSetup, emailaddress: str | None, host: str) -> str | None:
    """Which of our domains a request is for: the address's, else the Host's (``autoconfig.`` and port
    dropped); None when not ours. NotAnAddress when ``emailaddress`` is not a dot-atom local@domain."""
    if emailaddress is not None:
        local, _, domain = emailaddress.rpartition("@")
        if len(emailaddress) > MAX_ADDRESS or not _dot_atom(local, _ATEXT) or not _dot_atom(domain, _LABEL):
            raise NotAnAddress("the emailaddress parameter is not an e-mail address")
        return setup.our_domain(domain)
    if host.startswith("["):  # an IPv6 literal names no domain
        return None
    name = host.rpartition(":")[0] if ":" in host else host
    name = name.lower()
    return setup.our_domain(name.removeprefix(HOST_PREFIX) if name.startswith(HOST_PREFIX) else name)


def _dot_atom(text: str, allowed: frozenset[str]) -> bool:
    """``text`` is dot-separated non-empty runs of ``allowed`` characters."""
    return all(part and allowed.issuperset(part) for part in text.split("."))


async def _client_config(request: web.Request) -> web.Response:
    setup = request.app[_SETUP_KEY]
    try:
        # The Host header itself: aiohttp's request.host would look up our own name in the DNS without one.
        domain = requested_domain(setup, request.query.get("emailaddress"), request.headers.get("Host", ""))
    except NotAnAddress as exc:
        return web.Response(status=400, text=f"{exc}\n")
    if domain is None:
        return web.Response(status=404, text="No mail configuration for this domain here.\n")
    log.info("autoconfig served domain=%s", domain)
    return web.Response(body=render_client_config(setup, domain), content_type="application/xml", charset="utf-8",
                        headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"})


def make_app(setup: ClientSetup) -> web.Application:
    """The autoconfig aiohttp application: GET (and HEAD) on the two paths Thunderbird asks."""
    app = web.Application()
    app[_SETUP_KEY] = setup
    for path in AUTOCONFIG_PATHS:
        app.router.add_get(path, _client_config)
    return app


async def start_autoconfig(settings: Settings, sock: socket.socket, tls: ssl.SSLContext) -> web.AppRunner:
    """Serve the document over HTTPS on a bound socket; clean up with ``await runner.cleanup()``."""
    return await start_https(make_app(ClientSetup.of(settings)), sock, tls)
