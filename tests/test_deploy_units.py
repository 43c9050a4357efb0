"""The systemd units of deploy/: the hardening and restart policy an operator relies on, a command line our CLIs
accept, HOME writable and nothing else; checked by ``systemd-analyze verify`` where the machine has systemd."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNITS = {  # unit file -> the command it runs
    "mssante-operator.service": "mssante-operator",
    "mes-bridge.service": "mes-bridge",
}
LOW_PORTS_CAPABILITY = "CAP_NET_BIND_SERVICE"


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)  # a key twice would be an error
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd's keys are case-sensitive
    parser.read_string((ROOT / "deploy" / name).read_text(encoding="utf-8"))
    return parser


@pytest.mark.parametrize("name", UNITS)
def test_the_unit_is_hardened_and_restarts(name: str) -> None:
    service = _unit(name)["Service"]
    assert service["User"] == "mssante" and service["Group"] == "mssante"
    assert service["ProtectSystem"] == "strict"
    assert service["NoNewPrivileges"] == "yes" and service["PrivateTmp"] == "yes"
    assert service["AmbientCapabilities"] == LOW_PORTS_CAPABILITY
    assert service["CapabilityBoundingSet"] == LOW_PORTS_CAPABILITY
    assert service["Restart"] == "on-failure" and service["RestartSec"]
    assert service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] == "mixed"  # SIGTERM to the main process, which stops its children itself
    assert shlex.split(service["ExecReload"]) == ["/bin/kill", "-HUP", "$MAINPID"]
    assert _unit(name)["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.parametrize(("name", "command"), UNITS.items())
def test_home_is_the_only_writable_path(name: str, command: str) -> None:
    service = _unit(name)["Service"]
    argv = shlex.split(service["ExecStart"])
    assert Path(argv[0]).name == command and argv[1:3] == ["serve", "--home"]
    home = argv[3]
    assert service["ReadWritePaths"] == home == service["WorkingDirectory"]
    assert home.startswith("/var/lib/")


def test_the_bridge_unit_says_when_not_to_use_it() -> None:
    text = (ROOT / "deploy" / "mes-bridge.service").read_text(encoding="utf-8")
    assert "companion" in text and "[bridge]" in text


@pytest.mark.parametrize(("name", "command"), UNITS.items())
def test_the_command_line_is_one_our_cli_accepts(name: str, command: str) -> None:
    argv = shlex.split(_unit(name)["Service"]["ExecStart"])
    module = {"mssante-operator": "mssante_operator.cli", "mes-bridge": "mes_bridge"}[command]
    result = subprocess.run([sys.executable, "-m", module, *argv[1:], "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--home" in result.stdout


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not on this machine")
@pytest.mark.parametrize(("name", "command"), UNITS.items())
def test_systemd_analyze_verifies_the_unit(tmp_path: Path, name: str, command: str) -> None:
    """verify checks that ExecStart exists: the unit is checked with this virtualenv's command in its place."""
    executable = Path(sys.executable).parent / command
    if not executable.exists():
        executable = Path(sys.executable)
    text = (ROOT / "deploy" / name).read_text(encoding="utf-8")
    installed = f"/opt/mssante/venv/bin/{command}"
    assert installed in text
    unit = tmp_path / name
    unit.write_text(text.replace(installed, str(executable)), encoding="utf-8")
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert name not in result.stderr, result.stderr  # no warning about the unit itself
