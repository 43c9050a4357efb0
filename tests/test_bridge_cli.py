"""The mes-bridge command: serve (a real process, SIGTERM), patients ls/set-state, inbox, send."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.bridge_kit import (
    INS,
    LMTPS,
    address,
    fake_submission,
    lmtp_transaction,
    make_bridge_home,
    message,
    tls_for,
)

from mes_bridge.cli import main
from mes_bridge.settings import load_bridge_settings
from mssante_operator.demo_kit import free_ports

DOCTOR = "dr.martin@hopital.operator.test"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def wait_for(path: Path, text: str, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        assert process.poll() is None, path.read_text(errors="replace")
        assert time.monotonic() < deadline, path.read_text(errors="replace")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> dict:
    lmtp, registry = free_ports(2)
    return make_bridge_home(tmp_path_factory.mktemp("bridge") / "home", lmtp_port=lmtp, registry_port=registry)


@pytest.fixture(scope="module")
def served(kit: dict) -> dict:
    """`python -m mes_bridge serve` runs, takes a message over LMTP, re-reads CRLs on SIGHUP, stops on SIGTERM."""
    home = kit["home"]
    log_path = home / "bridge.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "mes_bridge", "serve", "--home", str(home)],
                                   stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            wait_for(log_path, "bridge ready", process)
            with LMTPS(kit["table"]["listeners"]["lmtp"]["port"], tls_for(kit, "operator")) as client:
                _, data = lmtp_transaction(client, DOCTOR, [address("active")],
                                           message("<cli@operator.test>", subject="Résultats de biologie"))
            assert data[0][0] == 250
            process.send_signal(signal.SIGHUP)
            wait_for(log_path, "CRLs reloaded", process)
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(30)
    return kit


def test_serve_logs_ready_reloads_crls_on_sighup_and_stops_on_sigterm(served: dict) -> None:
    text = (served["home"] / "bridge.log").read_text()
    ports = served["table"]["listeners"]
    assert f"bridge ready lmtp=127.0.0.1:{ports['lmtp']['port']} registry=127.0.0.1:{ports['registry']['port']}" in text
    assert "bridge stopping" in text
    assert "Résultats" not in text  # never a subject in the logs


def test_inbox_lists_received_messages(served: dict) -> None:
    code, output = run("inbox", INS["active"], "--home", str(served["home"]))
    assert code == 0
    welcome, line = [json.loads(line) for line in output.splitlines()]
    assert welcome["from"] == "Mon espace santé <ne-pas-repondre@monespacesante.invalid>"
    assert set(line) == {"id", "message_id", "from", "subject", "size", "received_at"}
    assert line["message_id"] == "<cli@operator.test>"
    assert line["from"] == "Dr Martin <dr.martin@hopital.operator.test>"
    assert line["subject"] == "Résultats de biologie"
    assert line["received_at"].endswith("+00:00")


def test_patients_ls_has_no_password_hashes(served: dict) -> None:
    code, output = run("patients", "ls", "--home", str(served["home"]))
    assert code == 0
    rows = [json.loads(line) for line in output.splitlines()]
    assert {row["ins"]: row["state"] for row in rows}[INS["opposed"]] == "opposed"
    assert all("password_hash" not in row for row in rows)
    assert "argon2" not in output


def test_patients_set_state_is_audited(served: dict) -> None:
    home = str(served["home"])
    code, output = run("patients", "set-state", INS["closed"], "active", "--home", home, "--by", "alice")
    assert code == 0
    assert json.loads(output)["state"] == "active"
    from mes_bridge.service import open_store
    from mssante_base.patients.ins import validate_ins

    store = open_store(load_bridge_settings(served["home"]))
    try:
        changed, welcome = store.audit(validate_ins(INS["closed"]))[-2:]  # first time it takes mail: welcome
        assert (changed.action, changed.actor) == ("patient-state", "operator:alice")
        assert (welcome.action, welcome.actor) == ("receive", "mes_bridge")
    finally:
        store.close()
    code, output = run("patients", "set-state", INS["unknown"], "active", "--home", home)
    assert code == 1 and "no patient space" in output
    code, output = run("patients", "set-state", "123", "active", "--home", home)
    assert code == 2 and "15 characters" in output


def _with_submission(kit: dict, port: int) -> None:
    text = (kit["home"] / "config.toml").read_text()
    lines = [line for line in text.splitlines() if not line.startswith("operator_submission")]
    index = lines.index("[bridge]") + 1
    lines.insert(index, f'operator_submission = "127.0.0.1:{port}"')
    (kit["home"] / "config.toml").write_text("\n".join(lines) + "\n")


def test_send_prints_one_line_per_recipient(served: dict, tmp_path: Path) -> None:
    other = "dr.durand@clinique.operator.test"
    attachment = tmp_path / "photo.jpg"
    attachment.write_bytes(b"\xff\xd8\xff jpeg")
    refusal = "550 5.7.1 A patient may write only to a professional who wrote first"
    with fake_submission(served, refuse={other: refusal}) as operator:
        _with_submission(served, operator.port)
        code, output = run("send", "--home", str(served["home"]), "--from", INS["active"], "--to", DOCTOR,
                           "--to", other, "--subject", "Question", "--body", "Bonjour", "--attach", str(attachment))
        assert code == 1
        lines = output.splitlines()
        assert lines[0].startswith(f"accepted {DOCTOR} <")
        assert lines[1] == f"refused {other}: {refusal}"
        code, output = run("send", "--home", str(served["home"]), "--from", INS["active"], "--to", DOCTOR,
                           "--subject", "Merci", "--body", "Merci")
        assert code == 0
    assert len(operator.received) == 2
    code, output = run("send", "--home", str(served["home"]), "--from", INS["opposed"], "--to", DOCTOR,
                       "--subject", "x", "--body", "x")
    assert code == 77


def test_send_exit_status_when_the_operator_is_unreachable(served: dict) -> None:
    _with_submission(served, free_ports(1)[0])
    code, output = run("send", "--home", str(served["home"]), "--from", INS["active"], "--to", DOCTOR,
                       "--subject", "x", "--body", "x")
    assert code == 69
    assert "cannot connect" in output


def test_a_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[bridge]\ncert = 1\n")
    code, output = run("patients", "ls", "--home", str(tmp_path))
    assert code == 1
    assert "bridge.cert" in output and "config.toml" in output


def test_commands_seed_patients_before_serve_ever_ran(tmp_path: Path) -> None:
    make_bridge_home(tmp_path / "home")
    code, output = run("patients", "ls", "--home", str(tmp_path / "home"))
    assert code == 0
    assert len(output.splitlines()) == 5
