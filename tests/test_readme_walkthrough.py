"""The README, followed as a newcomer would: on a fresh copy of the repository, the quick start's
`./scripts/demo.sh` runs in the background, then every ```sh block of the "Walkthrough" section runs
in order, in bash, after the quick start's `. .venv/bin/activate` — the commands exactly as written.

The copy holds the repository's files (tracked and new, as `git ls-files` lists them) and shares this
checkout's `.venv` (bootstrap finds it installed from the same lock), so the test measures the README
and the demo kit, not pip.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from support.harness import wait_for_log

ROOT = Path(__file__).resolve().parent.parent
SECTION = re.compile(r"^## Walkthrough\n(.*?)(?=^## )", re.MULTILINE | re.DOTALL)
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)
QUICK_START = re.compile(r"^## Quick start\n(.*?)(?=^## )", re.MULTILINE | re.DOTALL)

pytestmark = pytest.mark.skipif(shutil.which("mbsync") is None or not (ROOT / ".git").exists(),
                                reason="needs isync's mbsync and a git checkout")


def readme_blocks(section: re.Pattern[str]) -> list[str]:
    found = section.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert found is not None, f"README.md has no section {section.pattern!r}"
    return BLOCK.findall(found.group(1))


def fresh_copy(target: Path) -> Path:
    """The repository's files as a fresh clone would have them, and this checkout's virtualenv."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    (target / ".venv").symlink_to(ROOT / ".venv")
    return target


def test_the_quick_start_and_the_walkthrough_run_as_written(tmp_path: Path) -> None:
    quick = readme_blocks(QUICK_START)
    assert quick[0].splitlines()[0].startswith("./scripts/demo.sh") and ". .venv/bin/activate" in quick[1]
    steps = readme_blocks(SECTION)
    assert len(steps) >= 5
    clone = fresh_copy(tmp_path / "clone")
    log_path = clone / "demo.log"
    env = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH")}
    with log_path.open("wb") as log:
        demo = subprocess.Popen(["./scripts/demo.sh"], cwd=clone, stdout=log, stderr=subprocess.STDOUT,
                                env={**env, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    try:
        wait_for_log(log_path, "operator hopital-demo.mssante.fr ready", timeout=180)
        wait_for_log(log_path, "bridge ready", timeout=60)
        script = "set -euo pipefail\n. .venv/bin/activate\n" + "\n".join(steps)
        done = subprocess.run(["bash", "-c", script], cwd=clone, capture_output=True, text=True, timeout=600,
                              env=env)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
    finally:
        os.killpg(demo.pid, signal.SIGTERM)
        try:
            demo.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(30)
    assert "Patient space: https://127.0.0.1:" in log_path.read_text(encoding="utf-8")
    assert output.count("accepted ") >= 3  # the peer's, the colleague's and the patient's message
    assert "dkim=pass header.d=labo-biolab.mssante.fr" in output  # step 1: signed by the peer's key
    assert "clients/Maildir/INBOX" in output  # step 2: mbsync brought the message down
    assert '"subject": "Avis"' in output  # step 3: in the colleague's INBOX
    assert '"subject": "Vos résultats"' in output  # step 4: in the patient's space
    assert '"kind": ' in output  # step 5: the newest notice of her outbox
    assert '"address": "dr.martin@hopital-demo.mssante.fr"' in done.stdout  # step 6: the imported accounts
    assert "ok    registry" in done.stdout  # and the health check reaches the bridge
