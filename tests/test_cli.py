"""The contract command line: init, serve (clean stop on SIGTERM), mailbox ls, config errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import psutil
import tomli_w
from support.harness import (
    DOCTOR,
    configure,
    connect_process,
    lab_report,
    make_kit,
    peer,
    serve_process,
    signed,
    wait_for_log,
    wait_for_port,
)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mssante_operator.cli", *args],
                          capture_output=True, text=True, timeout=120)


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    home = tmp_path / "kit"
    assert cli("init", str(home)).returncode == 0
    first = json.loads((home / "demo.json").read_text())
    again = cli("init", str(home))
    assert again.returncode != 0
    assert "--force" in again.stderr
    assert json.loads((home / "demo.json").read_text()) == first
    assert cli("init", str(home), "--force").returncode == 0
    assert json.loads((home / "demo.json").read_text())["peers"][0]["dn"] == first["peers"][0]["dn"]


def test_config_error_names_file_and_key(tmp_path: Path) -> None:
    make_kit(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text(config.read_text().replace("max_recipients = 100", 'max_recipients = "many"'))
    result = cli("serve", "--home", str(tmp_path))
    assert result.returncode != 0
    assert str(config) in result.stderr
    assert "limits.max_recipients" in result.stderr


def test_serve_logs_listeners_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    manifest = make_kit(tmp_path)
    with serve_process(tmp_path, manifest) as process:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    log = (tmp_path / "serve.log").read_text()
    assert f"listener mta up on 127.0.0.1:{manifest['listeners']['mta']['port']}" in log
    assert "listener mtas up" in log
    assert "operator stopped" in log


def test_mailbox_ls_prints_one_json_object_per_message_while_serving(tmp_path: Path) -> None:
    manifest = make_kit(tmp_path)
    labo = peer(manifest, "labo")
    with serve_process(tmp_path, manifest):
        for subject in ("Résultats NFS", "Compte rendu"):
            with connect_process(tmp_path, manifest, labo) as client:
                client.sendmail(labo["sender"], [DOCTOR],
                                signed(tmp_path, labo, lab_report(labo["sender"], [DOCTOR], subject=subject)))
        result = cli("mailbox", "ls", DOCTOR, "--home", str(tmp_path))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["uid"] for row in rows] == [1, 2]
    assert [row["subject"] for row in rows] == ["Résultats NFS", "Compte rendu"]
    for row in rows:
        assert set(row) == {"uid", "message_id", "from", "subject", "size", "received_at",
                            "authentication_results"}
        assert row["from"] == labo["sender"]
        assert isinstance(row["size"], int) and row["size"] > 1000
        assert row["received_at"].endswith("+00:00")
        assert "dkim=pass" in row["authentication_results"]
        assert row["message_id"].endswith("@labo-biolab.mssante.fr>")


def test_mailbox_ls_of_an_empty_mailbox_prints_nothing(tmp_path: Path) -> None:
    make_kit(tmp_path)
    result = cli("mailbox", "ls", DOCTOR, "--home", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_serve_with_one_worker_restarts_a_crashed_bridge(tmp_path: Path) -> None:
    """workers = 1 with [bridge]: the supervisor restarts a mes_bridge that dies, and says so."""
    manifest = make_kit(tmp_path, server={"workers": 1})
    registry = manifest["listeners"]["bridge_registry"]
    with serve_process(tmp_path, manifest) as process:
        wait_for_log(tmp_path / "serve.log", "bridge ready")  # its port may accept before it logs so
        first = _bridge_process(psutil.Process(process.pid))
        first.kill()
        wait_for_log(tmp_path / "serve.log", "restarting it")
        second = _bridge_process(psutil.Process(process.pid), other_than=first.pid)
        wait_for_log(tmp_path / "serve.log", "bridge ready", count=2)
        wait_for_port(registry["host"], registry["port"])
        assert second.is_running()
    assert f"mes_bridge (pid {first.pid}) exited" in (tmp_path / "serve.log").read_text()


def _bridge_process(serve: Any, other_than: int | None = None, timeout: float = 60.0) -> Any:
    """The running mes_bridge process below ``serve`` (waits for it to appear)."""
    deadline = time.monotonic() + timeout
    while True:
        for child in serve.children(recursive=True):
            try:
                if "mes_bridge" in child.cmdline() and child.pid != other_than and child.status() != "zombie":
                    return child
            except psutil.NoSuchProcess:
                continue
        if time.monotonic() > deadline:
            raise TimeoutError("no mes_bridge process below serve")
        time.sleep(0.05)


def test_serve_refuses_a_blob_directory_that_is_not_the_databases(tmp_path: Path) -> None:
    """A node pointed at another blob storage than the database's stops at start-up, saying why."""
    make_kit(tmp_path)
    assert cli("mailbox", "ls", DOCTOR, "--home", str(tmp_path)).returncode == 0  # binds blobs/ to store.db
    configure(tmp_path, storage={"blob_dir": "node-local-blobs"})
    with_bridge = (tmp_path / "config.toml").read_text()
    without_bridge = tomllib.loads(with_bridge)
    del without_bridge["bridge"]
    for config in (with_bridge, tomli_w.dumps(without_bridge)):  # the supervisor's preparation; in process
        (tmp_path / "config.toml").write_text(config)
        configure(tmp_path, server={"workers": 1})
        result = cli("serve", "--home", str(tmp_path))
        assert result.returncode != 0
        assert "cannot start" in result.stderr and "node-local-blobs" in result.stderr
        assert "storage.blob_dir" in result.stderr and "Traceback" not in result.stderr
