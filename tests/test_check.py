"""`mssante-operator check`: one line per item, exit 1 on any failure, naming the item (cron, monitoring)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from support.harness import configure, kit_store, make_kit, serve_process, wait_for_port

from mssante_operator.cli import main
from mssante_operator.demo_kit import (
    LISTE_BLANCHE_FILE,
    OPERATOR,
    OPERATOR_CERT,
    OPERATOR_KEY,
    TRUST_CA_CERT,
    TRUST_CA_CRL,
    TRUST_CA_KEY,
    free_ports,
)
from mssante_operator.trust_space import dev_pki


def check(home: Path, *options: str) -> tuple[int, dict[str, tuple[str, str]]]:
    """Exit status, and each item's (status, detail) from the command's lines."""
    result = CliRunner().invoke(main, ["check", "--home", str(home), *options])
    findings = {}
    for line in result.stdout.splitlines():
        match = re.fullmatch(r"(ok|warn|fail) +(\S.*?)  (.*)", line)
        assert match, line
        findings[match[2]] = (match[1], match[3])
    return result.exit_code, findings


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A kit whose store `serve` would have migrated."""
    home = tmp_path_factory.mktemp("kit") / "home"
    manifest = make_kit(home)
    with kit_store(home):
        pass
    return home, manifest


@pytest.fixture
def home(tmp_path: Path, template: tuple[Path, dict[str, Any]]) -> Path:
    copy = tmp_path / "home"
    shutil.copytree(template[0], copy)
    return copy


def _trust_ca(home: Path) -> dev_pki.Authority:
    key = serialization.load_pem_private_key((home / TRUST_CA_KEY).read_bytes(), None)
    return dev_pki.Authority(cert=x509.load_pem_x509_certificate((home / TRUST_CA_CERT).read_bytes()), key=key)


def _reissue(home: Path, **kw: Any) -> None:
    """Replace the operator's certificate by one of the kit's CA with other dates or usages."""
    issued = dev_pki.issue(_trust_ca(home), cn=OPERATOR.host, ou=OPERATOR.ou, org=OPERATOR.org, st=OPERATOR.st,
                           dns_names=(OPERATOR.host,), ip_addresses=("127.0.0.1",), **kw)
    dev_pki.write_chain(home / OPERATOR_CERT, issued.chain)
    dev_pki.write_key(home / OPERATOR_KEY, issued.key)


def test_check_passes_on_a_served_kit(tmp_path):
    home = tmp_path / "home"
    manifest = make_kit(home)
    with serve_process(home, manifest):
        registry = manifest["listeners"]["bridge_registry"]
        wait_for_port(registry["host"], int(registry["port"]))  # mes_bridge starts beside the workers
        status, findings = check(home)
        assert status == 0, findings
        assert {item for item, (verdict, _) in findings.items() if verdict == "fail"} == set()
        assert set(findings) == {"config", "certificate", f"crl {TRUST_CA_CRL}", "liste blanche", "dkim key", "store",
                                 "annuaire", "registry"}
        result = CliRunner().invoke(main, ["check", "--home", str(home), "--json"])
        assert result.exit_code == 0
        assert [json.loads(line)["item"] for line in result.stdout.splitlines()] == list(findings)


def _expect_failure(home: Path, item: str, words: str) -> None:
    status, findings = check(home)
    assert status == 1
    assert findings[item][0] == "fail", findings[item]
    assert words in findings[item][1]


def test_an_expired_certificate_fails(home):
    _reissue(home, not_after=dev_pki.now() - dt.timedelta(days=1))
    _expect_failure(home, "certificate", "expired on")


def test_a_certificate_not_yet_valid_fails(home):
    later = dev_pki.now() + dt.timedelta(days=2)
    _reissue(home, not_before=later, not_after=later + dt.timedelta(days=365))
    _expect_failure(home, "certificate", "is not valid before")


def test_a_certificate_expiring_within_30_days_warns(home):
    _reissue(home, not_after=dev_pki.now() + dt.timedelta(days=10))
    _, findings = check(home)
    assert findings["certificate"][0] == "warn"
    assert "renew it" in findings["certificate"][1]


def test_a_certificate_without_client_auth_fails(home):
    _reissue(home, client=False)
    _expect_failure(home, "certificate", "lacks the extended key usage clientAuth")


def test_a_certificate_of_another_ca_fails(home):
    rogue = dev_pki.make_ca("AC PIRATE", "HORS ESPACE")
    issued = dev_pki.issue(rogue, cn=OPERATOR.host, ou=OPERATOR.ou, org=OPERATOR.org, st=OPERATOR.st)
    dev_pki.write_chain(home / OPERATOR_CERT, issued.chain)
    dev_pki.write_key(home / OPERATOR_KEY, issued.key)
    _expect_failure(home, "certificate", "is not issued by a CA of the trust bundle")


def test_a_key_that_is_not_the_certificates_fails(home):
    dev_pki.write_key(home / OPERATOR_KEY, dev_pki.make_key())
    _expect_failure(home, "certificate", "cannot be used together")


def test_a_stale_crl_fails(home):
    past = dev_pki.now() - dt.timedelta(days=30)
    dev_pki.write_crl(home / TRUST_CA_CRL, dev_pki.make_crl(_trust_ca(home), [], last_update=past,
                                                            next_update=past + dt.timedelta(days=7)))
    _expect_failure(home, f"crl {TRUST_CA_CRL}", "stale: its nextUpdate")


def test_a_crl_of_another_ca_fails(home):
    dev_pki.write_crl(home / TRUST_CA_CRL, dev_pki.make_crl(dev_pki.make_ca("AC PIRATE", "HORS ESPACE"), []))
    _expect_failure(home, f"crl {TRUST_CA_CRL}", "is not a trust CA")


@pytest.mark.parametrize(("hours", "verdict", "url"), [(1.5, "warn", True), (3, "fail", True), (3, "warn", False)])
def test_an_old_liste_blanche_warns_then_fails(home, hours, verdict, url):
    """The kit refreshes every hour: older than that is late, older than twice that is stale when it is
    downloaded (the downloads fail); a file kept up to date by hand (no URL) is only late."""
    if url:
        configure(home, trust_space={"liste_blanche_url": "https://127.0.0.1:9/listeblanche.xml",
                                     "liste_blanche_checksum_url": "https://127.0.0.1:9/checksum"})
    then = time.time() - hours * 3600
    os.utime(home / LISTE_BLANCHE_FILE, (then, then))
    status, findings = check(home)
    assert findings["liste blanche"][0] == verdict, findings["liste blanche"]
    if verdict == "fail":
        assert status == 1
        assert findings["liste blanche"][1].startswith("stale: ")


def test_an_unreachable_annuaire_fails(home):
    [port] = free_ports(1)
    configure(home, annuaire={"backend": "ldap", "url": f"ldap://127.0.0.1:{port}", "base_dn": "dc=test",
                              "allow_anonymous": True, "timeout": "2s"})
    _expect_failure(home, "annuaire", f"ldap ldap://127.0.0.1:{port}")


def test_an_unreachable_registry_fails(home):
    [port] = free_ports(1)
    configure(home, patients={"registry_url": f"https://127.0.0.1:{port}"})
    _expect_failure(home, "registry", "unreachable")


def test_an_unmigrated_store_fails(home):
    (home / "store.db").unlink()
    _expect_failure(home, "store", "does not exist yet")


def test_a_broken_configuration_is_one_failing_line(home):
    configure(home, trust_space={"refresh_interval": "soon"})
    status, findings = check(home)
    assert status == 1
    assert list(findings) == ["config"]
    assert "trust_space.refresh_interval" in findings["config"][1]
