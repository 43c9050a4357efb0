"""The operator on an LDAP annuaire: failures of the directory, its TLS, its credentials, and the cache.

A directory that is down or too slow must never turn into a permanent refusal: RCPT gets
451 4.4.3 and the peer retries; once the directory is back, the same session goes on.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from support.extraction_data import row_line, write_extraction
from support.harness import connect, make_kit, peer, running_operator
from support.slapd import Slapd
from support.slapd import slapd_server as _slapd_fixture  # noqa: F401 - the fixture, registered as slapd_server
from test_annuaire_backends import ldap_settings

from mssante_base.annuaire import AnnuaireUnavailable
from mssante_base.annuaire.factory import open_annuaire
from mssante_base.errors import ConfigError
from mssante_operator.cli import main
from mssante_operator.config import load_settings
from mssante_operator.trust_space import dev_pki

DOMAIN = "hopital-demo.mssante.fr"
DOCTOR = f"dr.martin@{DOMAIN}"
SECRETARY = f"ines.secretaire@{DOMAIN}"
UNASKED = f"dr.inconnu@{DOMAIN}"  # in no list of the kit: nothing has looked it up before the test does


def _reply(answer: tuple[int, bytes]) -> str:
    code, text = answer
    return f"{code} {text.decode('utf-8', 'replace')}"


def ldap_kit(tmp_path: Path, slapd_server: Slapd, **extra: Any) -> tuple[Path, dict[str, Any]]:
    home = tmp_path / "kit"
    manifest = make_kit(home, annuaire=ldap_settings(slapd_server, **extra))
    result = CliRunner().invoke(main, ["annuaire", "import", str(home / "annuaire.json"), "--home", str(home)])
    assert result.exit_code == 0, result.output
    return home, manifest


def ask(home: Path, method: str, *args: Any) -> Any:
    async def question() -> Any:
        settings = load_settings(home)
        annuaire = open_annuaire(settings.annuaire, settings.home)
        try:
            return await getattr(annuaire, method)(*args)
        finally:
            await annuaire.close()

    return asyncio.run(question())


def test_directory_down_mid_session_defers_then_recovers(tmp_path: Path, slapd_server: Slapd) -> None:
    home, manifest = ldap_kit(tmp_path, slapd_server)
    labo = peer(manifest, "labo")
    with running_operator(home, manifest) as running, connect(running, labo) as client:
        client.mail(labo["sender"])
        assert _reply(client.rcpt(DOCTOR)).startswith("250")
        slapd_server.stop()
        # Never asked yet (the accounts imported at the first start looked up the kit's mailboxes, so
        # those are cached): the directory must answer.
        reply = _reply(client.rcpt(UNASKED))
        assert reply.startswith("451 4.4.3"), reply
        assert _reply(client.rcpt(DOCTOR)).startswith("250")  # cached answers still serve
        slapd_server.start()
        assert _reply(client.rcpt(UNASKED)).startswith("550 5.1.1")  # a new connection is made
        assert _reply(client.rcpt(SECRETARY)).startswith("250")
        assert _reply(client.rcpt(f"nobody@{DOMAIN}")).startswith("550 5.1.1")


def test_a_directory_that_does_not_answer_times_out_into_451(tmp_path: Path, slapd_server: Slapd) -> None:
    home, manifest = ldap_kit(tmp_path, slapd_server, timeout="1s")
    labo = peer(manifest, "labo")
    with running_operator(home, manifest) as running, connect(running, labo) as client:
        client.mail(labo["sender"])
        slapd_server.pause()
        try:
            reply = _reply(client.rcpt(UNASKED))  # answered at all: the client's own timeout is 30 s
        finally:
            slapd_server.resume()
        assert reply.startswith("451 4.4.3"), reply
        assert _reply(client.rcpt(DOCTOR)).startswith("250")


def test_cached_entries_expire_and_an_import_empties_the_cache(tmp_path: Path, slapd_server: Slapd) -> None:
    home, _ = ldap_kit(tmp_path, slapd_server, cache_ttl="1s", negative_ttl="1s")
    new = "dr.nouveau@clinique-ouest.mssante.fr"
    file = write_extraction(tmp_path / "x.txt", [row_line("PER", new, rpps="8101", profession_label="Médecin")])

    async def scenario() -> None:
        settings = load_settings(home)
        annuaire = open_annuaire(settings.annuaire, settings.home)
        try:
            assert await annuaire.lookup(new) is None  # cached as missing
            result = await asyncio.to_thread(
                CliRunner().invoke, main, ["annuaire", "import", str(file), "--home", str(home)])
            assert result.exit_code == 0
            await asyncio.sleep(1.1)  # the stamp is looked at once a second; the negative TTL is 1 s too
            found = await annuaire.lookup(new)
            assert found is not None and found.profession_label == "Médecin"
            slapd_server.stop()
            assert (await annuaire.lookup(new)) is not None  # served from the cache while fresh
            await asyncio.sleep(1.1)
            with pytest.raises(AnnuaireUnavailable):
                await annuaire.lookup(new)  # expired: the directory is asked, and is down
        finally:
            await annuaire.close()

    asyncio.run(scenario())


def test_a_certificate_from_another_ca_is_refused(tmp_path: Path, slapd_server: Slapd) -> None:
    other = dev_pki.make_ca("Autre AC", "Autre organisation")
    ca_file = tmp_path / "other-ca.pem"
    dev_pki.write_chain(ca_file, [other.cert])
    home = tmp_path / "kit"
    make_kit(home, annuaire=ldap_settings(slapd_server, ca_file=str(ca_file)))
    with pytest.raises(AnnuaireUnavailable, match="cannot be reached or bound"):
        ask(home, "lookup", DOCTOR)


def test_ldaps_works_with_the_right_ca(tmp_path: Path, slapd_server: Slapd) -> None:
    home, _ = ldap_kit(tmp_path, slapd_server)
    config = home / "config.toml"
    config.write_text(config.read_text().replace(slapd_server.url, slapd_server.ldaps_url))
    assert ask(home, "lookup", DOCTOR).address == DOCTOR


def test_a_wrong_password_is_a_temporary_failure_not_a_refusal(tmp_path: Path, slapd_server: Slapd) -> None:
    home = tmp_path / "kit"
    make_kit(home, annuaire=ldap_settings(slapd_server, bind_password="wrong"))
    with pytest.raises(AnnuaireUnavailable):
        ask(home, "lookup", DOCTOR)


def test_no_anonymous_bind_unless_configured(tmp_path: Path, slapd_server: Slapd) -> None:
    home = tmp_path / "kit"
    with pytest.raises(ConfigError, match="bind_dn"):
        make_kit(home, annuaire=ldap_settings(slapd_server, bind_dn="", bind_password=""))
        load_settings(home)
    anonymous = tmp_path / "anonymous"
    make_kit(anonymous, annuaire=ldap_settings(slapd_server, bind_dn="", bind_password="", allow_anonymous=True))
    with pytest.raises(AnnuaireUnavailable):  # this directory refuses anonymous searches
        ask(anonymous, "lookup", DOCTOR)


def test_the_read_only_identity_cannot_import(tmp_path: Path, slapd_server: Slapd) -> None:
    home = tmp_path / "kit"
    make_kit(home, annuaire=ldap_settings(slapd_server, import_bind_dn="", import_bind_password=""))
    result = CliRunner().invoke(main, ["annuaire", "import", str(home / "annuaire.json"), "--home", str(home)])
    assert result.exit_code == 75
    assert "annuaire is unavailable" in result.output


def test_the_bind_password_can_come_from_a_file(tmp_path: Path, slapd_server: Slapd) -> None:
    secret = tmp_path / "ldap-password"
    secret.write_text(slapd_server.reader_password + "\n")
    home, _ = ldap_kit(tmp_path, slapd_server, bind_password="", bind_password_file=str(secret))
    assert ask(home, "lookup", DOCTOR).address == DOCTOR
