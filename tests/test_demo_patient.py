"""`serve` runs mes_bridge beside the operator, and `demo patient` plays the whole story against them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support.harness import make_kit, serve_process, wait_for_port


def test_demo_patient_story_against_a_served_kit(tmp_path: Path) -> None:
    home = tmp_path / "home"
    manifest = make_kit(home)
    with serve_process(home, manifest):
        for name in ("bridge_lmtp", "bridge_registry"):  # started by serve, as a companion process
            wait_for_port(manifest["listeners"][name]["host"], manifest["listeners"][name]["port"])
        done = subprocess.run([sys.executable, "-m", "mssante_operator.cli", "demo", "patient", "--home", str(home)],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "1. dr.martin@hopital-demo.mssante.fr writes to the patient" in out
    assert "550 5.7.1" in out and "a mis fin à vos échanges" in out
    assert out.rstrip().endswith("the story went as the rules say")
