"""config.toml: typed, validated at start-up, and every error names the file and the dotted key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from mssante_base.errors import ConfigError
from mssante_base.settings import parse_duration
from mssante_operator.config import load_settings


def _minimal() -> dict[str, Any]:
    """The smallest valid configuration: only what has no default."""
    return {
        "operator": {"domain": "hopital-demo.mssante.fr", "hostname": "mx.hopital-demo.mssante.fr"},
        "listeners": {"mta": {"port": 2525}},
        "tls": {"cert": "certs/operator.pem", "key": "certs/operator.key"},
        "trust_space": {"ca_bundle": "certs/trust-ca.pem", "liste_blanche": "listeblanche.xml"},
        "dkim": {"selector": "mss2026", "private_key": "dkim/own.key"},
    }


def _write(home: Path, config: dict[str, Any]) -> Path:
    path = home / "config.toml"
    path.write_text(tomli_w.dumps(config), encoding="utf-8")
    return path


def _error(home: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(home)
    return str(caught.value)


def test_minimal_configuration_loads_with_defaults(tmp_path):
    _write(tmp_path, _minimal())
    settings = load_settings(tmp_path)
    assert settings.limits.max_message_size == 25 * 1024 * 1024
    assert settings.limits.idle_timeout == 300.0
    assert settings.listeners.mta is not None and settings.listeners.mta.tls == "starttls"
    assert settings.listeners.mtas is None
    assert settings.annuaire.backend == "file"


def test_relative_paths_are_taken_from_home(tmp_path):
    _write(tmp_path, _minimal())
    settings = load_settings(tmp_path)
    assert settings.path(settings.tls.cert) == tmp_path.resolve() / "certs/operator.pem"
    assert settings.path(Path("/etc/ssl/ca.pem")) == Path("/etc/ssl/ca.pem")


def test_relative_sqlite_url_is_placed_in_home(tmp_path):
    _write(tmp_path, _minimal())
    assert load_settings(tmp_path).database_url == f"sqlite:///{tmp_path.resolve() / 'store.db'}"


def test_postgresql_url_is_kept_as_written(tmp_path):
    config = _minimal()
    config["storage"] = {"url": "postgresql+psycopg://mss@db.local/mssante"}
    _write(tmp_path, config)
    assert load_settings(tmp_path).database_url == "postgresql+psycopg://mss@db.local/mssante"


def test_own_domain_is_always_a_local_domain(tmp_path):
    config = _minimal()
    config["operator"]["local_domains"] = ["autre.mssante.fr"]
    _write(tmp_path, config)
    assert load_settings(tmp_path).operator.local_domains == ["hopital-demo.mssante.fr", "autre.mssante.fr"]


def test_unknown_key_is_named_with_its_section_and_the_file(tmp_path):
    config = _minimal()
    config["limits"] = {"max_recipient": 10}
    path = _write(tmp_path, config)
    message = _error(tmp_path)
    assert str(path.resolve()) in message
    assert "limits.max_recipient: unknown key" in message


def test_unknown_key_in_a_nested_table_is_named_with_its_full_path(tmp_path):
    config = _minimal()
    config["listeners"]["mta"]["tls_mode"] = "implicit"
    _write(tmp_path, config)
    assert "listeners.mta.tls_mode: unknown key" in _error(tmp_path)


def test_unknown_section_is_named(tmp_path):
    config = _minimal()
    config["pop3"] = {"port": 110}
    _write(tmp_path, config)
    assert "pop3: unknown key" in _error(tmp_path)


def test_wrong_type_is_named_with_its_dotted_key(tmp_path):
    config = _minimal()
    config["limits"] = {"max_recipients": "many"}
    path = _write(tmp_path, config)
    message = _error(tmp_path)
    assert str(path.resolve()) in message
    assert re.search(r"limits\.max_recipients: .*integer", message)


def test_out_of_range_value_is_named(tmp_path):
    config = _minimal()
    config["listeners"]["mta"]["port"] = 70000
    _write(tmp_path, config)
    assert "listeners.mta.port" in _error(tmp_path)


def test_value_outside_a_choice_is_named(tmp_path):
    config = _minimal()
    config["listeners"]["mta"]["tls"] = "maybe"
    _write(tmp_path, config)
    assert "listeners.mta.tls" in _error(tmp_path)


def test_missing_required_key_is_named(tmp_path):
    config = _minimal()
    del config["operator"]["hostname"]
    _write(tmp_path, config)
    assert "operator.hostname: Field required" in _error(tmp_path)


def test_every_error_of_the_file_is_reported_at_once(tmp_path):
    config = _minimal()
    config["limits"] = {"max_recipients": "many", "idle_timeout": "soon", "colour": "blue"}
    _write(tmp_path, config)
    message = _error(tmp_path)
    assert "limits.max_recipients" in message
    assert "limits.idle_timeout" in message
    assert "limits.colour: unknown key" in message


def test_static_dkim_keys_are_required_for_the_static_source(tmp_path):
    config = _minimal()
    config["dkim"]["key_source"] = "static"
    _write(tmp_path, config)
    message = _error(tmp_path)
    assert "dkim" in message
    assert "static_keys" in message


def test_home_is_not_a_key_of_the_file(tmp_path):
    config = _minimal()
    config["home"] = "/elsewhere"
    _write(tmp_path, config)
    assert "home: unknown key" in _error(tmp_path)


def test_missing_file_says_where_it_looked_and_how_to_create_one(tmp_path):
    message = _error(tmp_path)
    assert str(tmp_path.resolve() / "config.toml") in message
    assert "not found" in message
    assert "mssante-operator init" in message


def test_invalid_toml_is_reported_with_the_file(tmp_path):
    (tmp_path / "config.toml").write_text("[limits\nmax_recipients = 3\n", encoding="utf-8")
    message = _error(tmp_path)
    assert str(tmp_path.resolve() / "config.toml") in message
    assert "not valid TOML" in message


def test_file_that_is_not_utf8_is_reported(tmp_path):
    (tmp_path / "config.toml").write_bytes(b"[operator]\ndomain = \"h\xf4pital.fr\"\n")
    assert "cannot be read" in _error(tmp_path)


# --- durations ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90.0), ("5m", 300.0), ("4h", 14400.0), ("5d", 432000.0), ("250ms", 0.25), ("1.5h", 5400.0),
     (" 1m ", 60.0), ("42", 42.0), (30, 30.0), (0.5, 0.5)],
)
def test_durations_accept_units_and_plain_seconds(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5 weeks", "m5", "-1s", "", "1h30m", True, None, [1]])
def test_invalid_durations_are_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_durations_in_the_file_are_read_in_seconds(tmp_path):
    config = _minimal()
    config["limits"] = {"idle_timeout": "1s", "session_timeout": "30m"}
    config["trust_space"]["refresh_interval"] = "1d"
    _write(tmp_path, config)
    settings = load_settings(tmp_path)
    assert settings.limits.idle_timeout == 1.0
    assert settings.limits.session_timeout == 1800.0
    assert settings.trust_space.refresh_interval == 86400.0


def test_invalid_duration_in_the_file_is_named(tmp_path):
    config = _minimal()
    config["limits"] = {"idle_timeout": "5 weeks"}
    _write(tmp_path, config)
    message = _error(tmp_path)
    assert "limits.idle_timeout" in message
    assert "'5 weeks' is not a duration" in message


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"url": "http://ldap.example:389"}, "needs url"),
        ({"url": "ldap://ldap.example:389/dc=x"}, "needs url"),
        ({"base_dn": ""}, "needs base_dn"),
        ({"bind_dn": ""}, "needs bind_dn"),
        ({"bind_password": ""}, "bind_password"),
    ],
)
def test_an_incomplete_ldap_annuaire_is_refused(values: dict, message: str) -> None:
    from mssante_base.annuaire.settings import AnnuaireSettings

    complete = {"backend": "ldap", "url": "ldaps://ldap.example:636", "base_dn": "ou=mailboxes,dc=example",
                "bind_dn": "cn=reader,dc=example", "bind_password": "secret"}
    AnnuaireSettings.model_validate(complete)
    with pytest.raises(ValueError, match=message):
        AnnuaireSettings.model_validate({**complete, **values})


def test_an_anonymous_ldap_annuaire_must_be_asked_for() -> None:
    from mssante_base.annuaire.settings import AnnuaireSettings

    settings = AnnuaireSettings.model_validate({"backend": "ldap", "url": "ldap://127.0.0.1:389",
                                                "base_dn": "dc=x", "allow_anonymous": True})
    assert settings.bind_dn == "" and settings.attributes.address == "mssanteAddress"


def test_metrics_are_off_unless_a_listen_address_is_given(tmp_path):
    _write(tmp_path, _minimal())
    assert load_settings(tmp_path).metrics is None
    _write(tmp_path, {**_minimal(), "metrics": {"listen": "127.0.0.1:9464"}})
    metrics = load_settings(tmp_path).metrics
    assert metrics is not None and (metrics.host, metrics.port) == ("127.0.0.1", 9464)


def test_metrics_listen_must_be_host_and_port(tmp_path):
    _write(tmp_path, {**_minimal(), "metrics": {"listen": "9464"}})
    message = _error(tmp_path)
    assert "metrics" in message and "host:port" in message
