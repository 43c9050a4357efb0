"""Liste blanche and CRLs downloaded from their URLs: a good copy replaces the file and takes effect; a bad
one (checksum, garbage, rogue CA, expired, older, server down) leaves the last good copy in service."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from support.file_server import FileServers, file_servers
from support.harness import configure, make_kit, running_operator

from mssante_base.errors import ConfigError
from mssante_base.listening import WorkerLoad
from mssante_operator.app import Operator
from mssante_operator.config import load_settings
from mssante_operator.demo_kit import LISTE_BLANCHE_FILE, TRUST_CA_CERT, TRUST_CA_CRL, TRUST_CA_KEY
from mssante_operator.trust_space import dev_pki
from mssante_operator.trust_space import downloads as downloads_module
from mssante_operator.trust_space.downloads import TrustDownloads
from mssante_operator.trust_space.liste_blanche import ListedDomain, parse_liste_blanche, render_liste_blanche
from mssante_operator.trust_space.space import TrustSpace

NEW_DOMAIN = "nouveau.mssante.fr"
NEW_DN = "CN=smtp.nouveau.fr,OU=123456789,O=NOUVEL OPERATEUR,ST=Paris (75),C=FR"
LOGGER = "mssante_operator.trust_space.downloads"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServers]:
    with file_servers(tmp_path_factory.mktemp("web")) as running:
        yield running


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    home = tmp_path_factory.mktemp("kit") / "home"
    return home, make_kit(home)


@pytest.fixture
def kit(tmp_path: Path, template: tuple[Path, dict[str, Any]], servers: FileServers) -> tuple[Path, dict[str, Any]]:
    """A copy of the kit whose liste blanche and CRL come from the test servers (which serve nothing yet)."""
    servers.files.clear()
    home = tmp_path / "home"
    shutil.copytree(template[0], home)
    configure(home, trust_space={
        "liste_blanche_url": servers.https("/listeblanchemssante.xml"),
        "liste_blanche_checksum_url": servers.https("/checksum"),
        "crl_urls": [servers.http("/trust-ca.crl")],
    })
    return home, template[1]


def _downloads(home: Path, servers: FileServers) -> TrustDownloads:
    return TrustDownloads(load_settings(home), tls=servers.client_tls())


def _trust_ca(home: Path) -> dev_pki.Authority:
    key = serialization.load_pem_private_key((home / TRUST_CA_KEY).read_bytes(), None)
    return dev_pki.Authority(cert=x509.load_pem_x509_certificate((home / TRUST_CA_CERT).read_bytes()), key=key)


def _new_liste_blanche(home: Path, generated: dt.datetime | None = None) -> bytes:
    current = parse_liste_blanche((home / LISTE_BLANCHE_FILE).read_bytes())
    return render_liste_blanche([*current.entries, ListedDomain(NEW_DOMAIN, NEW_DN)], generated or dev_pki.now())


def _publish(servers: FileServers, xml: bytes, checksum: bytes | None = None) -> None:
    servers.files["/listeblanchemssante.xml"] = xml
    servers.files["/checksum"] = checksum if checksum is not None else hashlib.sha256(xml).hexdigest().encode()


def _crl_pem(ca: dev_pki.Authority, serials: list[int], **kw: Any) -> bytes:
    return dev_pki.make_crl(ca, serials, **kw).public_bytes(serialization.Encoding.PEM)


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def _unchanged(home: Path, name: str) -> tuple[bytes, float]:
    path = home / name
    return path.read_bytes(), path.stat().st_mtime


def test_a_new_liste_blanche_replaces_the_old_and_takes_effect(kit, servers, monkeypatch):
    """Through the operator: its download pass (worker 0's timer) fetches a due file and reloads the space."""
    home, manifest = kit
    monkeypatch.setenv("SSL_CERT_FILE", str(servers.ca_file))  # the operator trusts the system's CAs
    _publish(servers, _new_liste_blanche(home))
    servers.files["/trust-ca.crl"] = (home / TRUST_CA_CRL).read_bytes()
    with running_operator(home, manifest) as running:
        assert not running.operator.trust.liste_blanche().is_listed(NEW_DOMAIN)
        _age(home / LISTE_BLANCHE_FILE, 2 * 3600)  # older than refresh_interval (1h): due
        running.call(running.operator.download_trust_files())
        assert running.operator.trust.liste_blanche().is_listed(NEW_DOMAIN)
    assert time.time() - (home / LISTE_BLANCHE_FILE).stat().st_mtime < 600  # mtime: when the good copy came


def test_a_fresh_file_is_not_downloaded_and_a_missing_one_is(kit, servers):
    home, _ = kit
    downloads = _downloads(home, servers)
    assert downloads.due() == []
    (home / LISTE_BLANCHE_FILE).unlink()
    assert [source.kind for source in downloads.due()] == ["liste blanche"]
    xml = render_liste_blanche([ListedDomain(NEW_DOMAIN, NEW_DN)], dev_pki.now())
    _publish(servers, xml)
    [outcome] = downloads.refresh()
    assert outcome.replaced and (home / LISTE_BLANCHE_FILE).read_bytes() == xml


@pytest.mark.parametrize("case", ["bad checksum", "truncated", "garbage", "older", "too large", "server down"])
def test_a_bad_liste_blanche_leaves_the_last_good_copy(kit, servers, caplog, monkeypatch, case):
    home, _ = kit
    good = _new_liste_blanche(home)
    if case == "bad checksum":
        _publish(servers, good, hashlib.sha256(b"another file").hexdigest().encode())
    elif case == "truncated":
        _publish(servers, good[: len(good) // 2])  # its checksum matches: the parser refuses it
    elif case == "garbage":
        _publish(servers, b"\x00\x01 not xml at all \xff")
    elif case == "older":
        _publish(servers, _new_liste_blanche(home, dev_pki.now() - dt.timedelta(days=30)))
    elif case == "too large":
        _publish(servers, good)
        monkeypatch.setattr(downloads_module, "MAX_BYTES", 1000)
    downloads = _downloads(home, servers)
    if case == "server down":
        downloads.sources[0] = downloads.sources[0].__class__(
            "liste blanche", home / LISTE_BLANCHE_FILE, "https://127.0.0.1:1/listeblanchemssante.xml",
            "https://127.0.0.1:1/checksum")
    before = _unchanged(home, LISTE_BLANCHE_FILE)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        outcomes = downloads.refresh(downloads.sources[:1])
    assert not outcomes[0].replaced
    assert _unchanged(home, LISTE_BLANCHE_FILE) == before
    [line] = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert line.startswith("liste blanche not downloaded from https://127.0.0.1:")
    assert "keeping the last good copy" in line
    expected = {"bad checksum": "differs from the published checksum", "truncated": "not a usable liste blanche",
                "garbage": "not a usable liste blanche", "older": "before the copy in service",
                "too large": "larger than 1000 bytes", "server down": "refused"}[case]
    assert expected in line
    space = TrustSpace(load_settings(home))
    assert not space.liste_blanche().is_listed(NEW_DOMAIN)
    assert downloads.due() == []  # retried later, not in a loop


def test_a_new_crl_over_http_replaces_the_old_and_revokes(kit, servers):
    home, manifest = kit
    ca = _trust_ca(home)
    labo = x509.load_pem_x509_certificate((home / next(p for p in manifest["peers"] if p["name"] == "labo")["cert"])
                                          .read_bytes())
    servers.files["/trust-ca.crl"] = _crl_pem(ca, [labo.serial_number], crl_number=2)
    downloads = _downloads(home, servers)
    crl_source = next(s for s in downloads.sources if s.kind == "CRL")
    [outcome] = downloads.refresh([crl_source])
    assert outcome.replaced
    assert TrustSpace(load_settings(home)).revocations().is_revoked(labo)


@pytest.mark.parametrize("case", ["rogue CA", "impostor key", "expired", "older", "garbage", "server down"])
def test_a_bad_crl_leaves_the_last_good_copy(kit, servers, caplog, case):
    home, _ = kit
    ca = _trust_ca(home)
    past = dev_pki.now() - dt.timedelta(days=30)
    body = {
        "rogue CA": lambda: _crl_pem(dev_pki.make_ca("AC PIRATE", "HORS ESPACE"), [1]),
        "impostor key": lambda: _crl_pem(dev_pki.Authority(cert=ca.cert, key=dev_pki.make_key()), [1]),
        "expired": lambda: _crl_pem(ca, [1], last_update=past, next_update=past + dt.timedelta(days=7)),
        "older": lambda: _crl_pem(ca, [1], last_update=past, next_update=dev_pki.now() + dt.timedelta(days=7)),
        "garbage": lambda: b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
        "server down": lambda: None,
    }[case]()
    if body is not None:
        servers.files["/trust-ca.crl"] = body
    downloads = _downloads(home, servers)
    crl_source = next(s for s in downloads.sources if s.kind == "CRL")
    if case == "server down":
        crl_source = crl_source.__class__("CRL", crl_source.path, "http://127.0.0.1:1/trust-ca.crl")
    before = _unchanged(home, TRUST_CA_CRL)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        [outcome] = downloads.refresh([crl_source])
    assert not outcome.replaced
    assert _unchanged(home, TRUST_CA_CRL) == before
    [line] = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert line.startswith("CRL trust-ca.crl.pem not downloaded from http://127.0.0.1:")
    expected = {"rogue CA": "is not a trust CA", "impostor key": "signature does not verify", "expired": "expired",
                "older": "before the CRL in service", "garbage": "not a CRL", "server down": "refused"}[case]
    assert expected in line


def test_urls_are_validated(kit):
    home, _ = kit
    configure(home, trust_space={"liste_blanche_url": "http://example.test/lb.xml"})
    with pytest.raises(ConfigError, match=r"liste_blanche_url.*https://"):
        load_settings(home)
    configure(home, trust_space={"liste_blanche_url": "https://example.test/lb.xml", "crl_urls": ["a", "b"]})
    with pytest.raises(ConfigError, match="crl_urls: 2 URLs for 1 crl_files"):
        load_settings(home)


def test_serve_downloads_a_missing_liste_blanche_before_loading_it(kit, servers):
    """`serve --prepare` (the supervisor's start-up child) fetches what is missing, then checks and starts."""
    home, _ = kit
    (home / LISTE_BLANCHE_FILE).unlink()
    xml = render_liste_blanche([ListedDomain(NEW_DOMAIN, NEW_DN)], dev_pki.now())
    _publish(servers, xml)
    result = subprocess.run([sys.executable, "-m", "mssante_operator.cli", "serve", "--home", str(home), "--prepare"],
                            env={**os.environ, "SSL_CERT_FILE": str(servers.ca_file)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (home / LISTE_BLANCHE_FILE).read_bytes() == xml
    assert "liste blanche downloaded from https://127.0.0.1:" in result.stderr


def test_only_worker_0_downloads_and_it_has_the_supervisor_reload_every_process(kit, servers, monkeypatch):
    """Worker 0 fetches; the others never do. A replaced file makes it SIGHUP its supervisor, which forwards the
    reload to every worker and to mes_bridge (workers.Supervisor)."""
    home, _ = kit
    monkeypatch.setenv("SSL_CERT_FILE", str(servers.ca_file))
    signals: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, signum: signals.append((pid, signum)))
    _publish(servers, _new_liste_blanche(home))
    servers.files["/trust-ca.crl"] = (home / TRUST_CA_CRL).read_bytes()
    _age(home / LISTE_BLANCHE_FILE, 2 * 3600)
    settings = load_settings(home)
    shared = WorkerLoad.create(2)
    workers = [Operator(settings, inherited={}, load=WorkerLoad(shared.fd, slot, 2)) for slot in (1, 0)]
    try:
        before = _unchanged(home, LISTE_BLANCHE_FILE)
        asyncio.run(workers[0].download_trust_files())
        assert _unchanged(home, LISTE_BLANCHE_FILE) == before and signals == []
        asyncio.run(workers[1].download_trust_files())
        assert parse_liste_blanche((home / LISTE_BLANCHE_FILE).read_bytes()).is_listed(NEW_DOMAIN)
        assert signals == [(os.getppid(), signal.SIGHUP)]
    finally:
        for worker in workers:
            worker.store.close()
