"""Client autoconfiguration: Thunderbird's config-v1.1.xml served over HTTPS by a running operator, checked by a
client that verifies our chain to the kit's CA, for our domains only, whatever the emailaddress it is asked for."""

from __future__ import annotations

import http.client
import socket
import ssl
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from support.harness import RunningOperator, configure, make_kit, running_operator, serve_process

from mssante_operator.autoconfig import AUTOCONFIG_PATHS, ClientSetup, MailServer, render_client_config
from mssante_operator.config import ListenersSettings, load_settings

try:  # the document comes from a server: parse it as untrusted input where defusedxml is installed
    from defusedxml.ElementTree import fromstring
except ImportError:
    fromstring = ET.fromstring

DOMAIN = "hopital-demo.mssante.fr"
HOSTNAME = "mx.hopital-demo.mssante.fr"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningOperator]:
    home = tmp_path_factory.mktemp("kit") / "home"
    manifest = make_kit(home)
    configure(home, operator={"local_domains": [DOMAIN, "cabinet-demo.mssante.fr"]})
    with running_operator(home, manifest) as operator:
        yield operator


def _get(running: RunningOperator | tuple[Path, dict], path: str, *, host: str | None = None,
         context: ssl.SSLContext | None = None) -> tuple[int, str, bytes]:
    """(status, content type, body) of a GET on the autoconfig listener of a running operator or of a kit's
    (home, manifest), the chain verified to the kit's CA (and the certificate's name to the address)."""
    home, manifest = (running.home, running.manifest) if isinstance(running, RunningOperator) else running
    listener = manifest["listeners"]["autoconfig"]
    context = context or ssl.create_default_context(cafile=str(home / manifest["trust_ca"]))
    connection = http.client.HTTPSConnection(listener["host"], listener["port"], timeout=30, context=context)
    try:
        connection.request("GET", path, headers={"Host": host} if host else {})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


def _query(address: str) -> str:
    return "?" + urllib.parse.urlencode({"emailaddress": address})


def _servers(document: ET.Element, kind: str) -> list[tuple[str, str, int, str, str, list[str]]]:
    found = []
    for server in document.iter(kind):
        found.append((server.get("type", ""), server.findtext("hostname", ""), int(server.findtext("port", "0")),
                      server.findtext("socketType", ""), server.findtext("username", ""),
                      [auth.text or "" for auth in server.findall("authentication")]))
    return found


@pytest.mark.parametrize("path", AUTOCONFIG_PATHS)
def test_the_document_lists_our_listeners(running: RunningOperator, path: str) -> None:
    status, content_type, body = _get(running, path + _query(f"dr.martin@{DOMAIN}"))
    assert status == 200
    assert content_type.split(";")[0] in ("application/xml", "text/xml")
    document = fromstring(body)
    assert document.tag == "clientConfig" and document.get("version") == "1.1"
    provider = document.find("emailProvider")
    assert provider is not None and provider.get("id") == DOMAIN
    assert DOMAIN in [domain.text for domain in provider.findall("domain")]
    auth = ["password-cleartext", "TLS-client-cert"]  # no OAuth2: the kit configures no token issuer
    assert _servers(document, "incomingServer") == [
        ("imap", HOSTNAME, running.port("imaps"), "SSL", "%EMAILADDRESS%", auth),
        ("imap", HOSTNAME, running.port("imap"), "STARTTLS", "%EMAILADDRESS%", auth),
    ]
    assert _servers(document, "outgoingServer") == [
        ("smtp", HOSTNAME, running.port("submissions"), "SSL", "%EMAILADDRESS%", auth),
        ("smtp", HOSTNAME, running.port("submission"), "STARTTLS", "%EMAILADDRESS%", auth),
    ]


def test_the_domain_comes_from_the_host_without_an_address(running: RunningOperator) -> None:
    status, _, body = _get(running, "/mail/config-v1.1.xml", host="autoconfig.cabinet-demo.mssante.fr")
    assert status == 200
    assert fromstring(body).find("emailProvider").get("id") == "cabinet-demo.mssante.fr"
    status, _, body = _get(running, AUTOCONFIG_PATHS[0], host=f"{DOMAIN.upper()}:443")
    assert status == 200 and fromstring(body).find("emailProvider").get("id") == DOMAIN


@pytest.mark.parametrize("request_", [
    (AUTOCONFIG_PATHS[0] + _query("someone@example.org"), None),
    (AUTOCONFIG_PATHS[1] + _query("someone@labo-biolab.mssante.fr"), f"autoconfig.{DOMAIN}"),  # the address decides
    (AUTOCONFIG_PATHS[1], "autoconfig.example.org"),
    (AUTOCONFIG_PATHS[1], None),  # the Host is our address, not a domain
    ("/mail/other.xml" + _query(f"dr.martin@{DOMAIN}"), None),
])
def test_other_domains_and_paths_are_not_found(running: RunningOperator, request_: tuple[str, str | None]) -> None:
    path, host = request_
    status, _, body = _get(running, path, host=host)
    assert status == 404
    assert b"example.org" not in body


@pytest.mark.parametrize("address", [
    f'x"/><incomingServer type="pop3"><hostname>evil</hostname></incomingServer><x a="@{DOMAIN}',
    f"<script>alert(1)</script>@{DOMAIN}",
    f"a\r\nSet-Cookie: x=1@{DOMAIN}",
    f"a b@{DOMAIN}",
    f"@{DOMAIN}",
    "no-at-sign",
    "x" * 300 + f"@{DOMAIN}",
])
def test_an_injected_address_cannot_reach_the_document(running: RunningOperator, address: str) -> None:
    status, content_type, body = _get(running, AUTOCONFIG_PATHS[0] + _query(address))
    assert status == 400
    assert content_type.startswith("text/plain")
    assert b"<" not in body and b"evil" not in body and b"\r\nSet-Cookie" not in body


def test_a_valid_address_is_never_echoed(running: RunningOperator) -> None:
    """Only the %EMAILADDRESS% placeholder stands for the user: the client fills it in."""
    address = f"o'brien+cardio&co@{DOMAIN}"
    status, _, body = _get(running, AUTOCONFIG_PATHS[0] + _query(address))
    assert status == 200
    assert b"brien" not in body
    fromstring(body)


def test_the_chain_is_ours_and_no_client_certificate_is_asked(running: RunningOperator, tmp_path: Path) -> None:
    stranger = ssl.create_default_context()  # the system's CAs only: our chain is the trust space's
    with pytest.raises(ssl.SSLCertVerificationError):
        _get(running, AUTOCONFIG_PATHS[0], context=stranger)
    status, _, _ = _get(running, AUTOCONFIG_PATHS[0] + _query(f"dr.martin@{DOMAIN}"))  # no certificate sent
    assert status == 200


def test_oauth2_is_offered_when_tokens_are_configured(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_kit(home)
    configure(home, auth={"token_issuer": "https://auth.esante.gouv.fr/auth/realms/esante-wallet",
                          "token_audience": "mssante", "token_jwks": "jwks.json"})
    setup = ClientSetup.of(load_settings(home))
    document = fromstring(render_client_config(setup, DOMAIN))
    for _, _, _, _, _, methods in _servers(document, "incomingServer") + _servers(document, "outgoingServer"):
        assert methods == ["OAuth2", "password-cleartext", "TLS-client-cert"]


def test_only_configured_listeners_are_listed() -> None:
    setup = ClientSetup(hostname="mail.example.test", domains=("example.test",), oauth2=False,
                        servers=(MailServer("imap", 993, implicit_tls=True),))
    document = fromstring(render_client_config(setup, "example.test"))
    assert _servers(document, "incomingServer") == [
        ("imap", "mail.example.test", 993, "SSL", "%EMAILADDRESS%", ["password-cleartext", "TLS-client-cert"])]
    assert _servers(document, "outgoingServer") == []


def test_served_workers_answer_on_the_socket_the_supervisor_bound(tmp_path: Path) -> None:
    manifest = make_kit(tmp_path, server={"workers": 2})
    with serve_process(tmp_path, manifest):
        for _ in range(4):
            status, _, body = _get((tmp_path, manifest), AUTOCONFIG_PATHS[1] + _query(f"ines.secretaire@{DOMAIN}"))
            assert status == 200 and fromstring(body).find("emailProvider").get("id") == DOMAIN


def test_a_request_without_host_names_no_domain(running: RunningOperator) -> None:
    """HTTP/1.0 needs no Host header: no domain is named, none is guessed."""
    listener = running.manifest["listeners"]["autoconfig"]
    context = running.tls_context(check_hostname=True)
    with socket.create_connection((listener["host"], listener["port"]), timeout=30) as raw, \
            context.wrap_socket(raw, server_hostname=listener["host"]) as tls:
        tls.sendall(f"GET {AUTOCONFIG_PATHS[1]} HTTP/1.0\r\n\r\n".encode())
        answer = b""
        while chunk := tls.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.0 404 ") or answer.startswith(b"HTTP/1.1 404 ")


def test_the_listener_is_https_from_the_first_byte() -> None:
    listeners = ListenersSettings.model_validate({"autoconfig": {"host": "0.0.0.0", "port": 443}})
    assert listeners.autoconfig is not None and listeners.autoconfig.tls == "implicit"
    with pytest.raises(ValidationError, match=r"autoconfig\.tls"):
        ListenersSettings.model_validate({"autoconfig": {"port": 443, "tls": "starttls"}})
