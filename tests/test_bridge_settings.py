"""The [bridge] table: defaults, paths from HOME, and errors that name the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.bridge_kit import write_config

from mes_bridge.service import read_patients_file
from mes_bridge.settings import load_bridge_settings
from mssante_base.errors import ConfigError

MINIMAL = {"cert": "certs/bridge.pem", "key": "certs/bridge.key", "ca_bundle": "certs/trust-ca.pem"}


def test_defaults_and_paths_from_home(tmp_path: Path) -> None:
    write_config(tmp_path, {**MINIMAL, "listeners": {"lmtp": {"port": 2424}}}, operator={"domain": "x.test"})
    settings = load_bridge_settings(tmp_path)
    assert settings.home == tmp_path.resolve()
    assert settings.database_url == f"sqlite:///{tmp_path.resolve() / 'bridge.db'}"
    assert settings.path(settings.blob_dir) == tmp_path.resolve() / "bridge-blobs"
    assert settings.path(settings.cert) == tmp_path.resolve() / "certs/bridge.pem"
    assert settings.listeners.lmtp is not None and settings.listeners.lmtp.host == "127.0.0.1"
    assert settings.listeners.registry is None
    assert settings.max_message_size == 25 * 1024 * 1024
    assert settings.submission_address is None


def test_absolute_paths_and_other_databases_are_kept(tmp_path: Path) -> None:
    settings = load_bridge_settings(tmp_path, {**MINIMAL, "database": "postgresql+psycopg://db/bridge",
                                               "cert": "/etc/bridge.pem", "operator_submission": "[::1]:4650"})
    assert settings.database_url == "postgresql+psycopg://db/bridge"
    assert settings.path(settings.cert) == Path("/etc/bridge.pem")
    assert settings.submission_address == ("::1", 4650)


@pytest.mark.parametrize(("table", "message"), [
    ({**MINIMAL, "colour": "blue"}, "bridge.colour: unknown key"),
    ({**MINIMAL, "listeners": {"lmtp": {"port": 70000}}}, "bridge.listeners.lmtp.port"),
    ({**MINIMAL, "listeners": {"imap": {"port": 1}}}, "bridge.listeners.imap: unknown key"),
    ({"cert": "c.pem", "key": "k.pem"}, "bridge.ca_bundle: Field required"),
    ({**MINIMAL, "operator_submission": "localhost"}, "bridge.operator_submission"),
    ({**MINIMAL, "trusted_operators": ["CN=ok,C=FR", "no equals sign"]}, "bridge.trusted_operators"),
    ({**MINIMAL, "max_message_size": 10}, "bridge.max_message_size"),
    ({**MINIMAL, "home": "/elsewhere"}, "bridge.home: unknown key"),
])
def test_errors_name_the_key_and_the_file(tmp_path: Path, table: dict, message: str) -> None:
    write_config(tmp_path, table)
    with pytest.raises(ConfigError) as caught:
        load_bridge_settings(tmp_path)
    assert message in str(caught.value)
    assert str(tmp_path.resolve() / "config.toml") in str(caught.value)


def test_missing_table_or_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_bridge_settings(tmp_path)
    (tmp_path / "config.toml").write_text('[operator]\ndomain = "x.test"\n')
    with pytest.raises(ConfigError, match=r"\[bridge\]"):
        load_bridge_settings(tmp_path)
    (tmp_path / "config.toml").write_text("[bridge\n")
    with pytest.raises(ConfigError, match="TOML"):
        load_bridge_settings(tmp_path)


@pytest.mark.parametrize(("content", "message"), [
    ("{", "cannot read"),
    ('{"people": []}', '"patients"'),
    ('{"patients": [{"state": "active"}]}', "patients[0]"),
    ('{"patients": [{"ins": "123"}]}', "patients[0].ins: a matricule INS has 15 characters"),
    ('{"patients": [{"ins": "184067512345641", "state": "asleep"}]}', "patients[0].state"),
    ('{"patients": [{"ins": "184067512345641", "given_name": 3}]}', "must be strings"),
])
def test_patients_file_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "patients.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        read_patients_file(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)
