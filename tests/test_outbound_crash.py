"""A worker killed in the middle of a delivery loses nothing: its lease expires and the message goes again.

The operator runs as a real process (`serve`, one worker). The peer stores the message, then is slow to
answer DATA; the process is killed with SIGKILL while it waits for that answer, then started again. The
recipient is delivered again: a duplicate with the same Message-ID, which the receiver drops.
"""

from __future__ import annotations

import email
import signal
import smtplib
import time
from pathlib import Path

from support.harness import configure, make_kit, serve_process
from support.peer import PeerOperator
from test_submission import DOCTOR, letter

from mssante_operator.config import load_settings
from mssante_operator.store.facade import Store

LAB = "labo-biolab.mssante.fr"


def _submit(home: Path, manifest: dict, subject: str) -> None:
    import ssl

    context = ssl.create_default_context(cafile=str(home / manifest["trust_ca"]))
    context.check_hostname = False
    doctor = next(m for m in manifest["mailboxes"] if m["address"] == DOCTOR)
    with smtplib.SMTP_SSL("127.0.0.1", manifest["listeners"]["submissions"]["port"], context=context,
                          timeout=30) as client:
        client.login(DOCTOR, doctor["password"])
        client.sendmail(DOCTOR, [f"resultats@{LAB}"], letter(DOCTOR, [f"resultats@{LAB}"], subject=subject))


def test_killed_mid_delivery_then_restarted(tmp_path: Path) -> None:
    home = tmp_path / "home"
    manifest = make_kit(home)
    with PeerOperator(home, manifest, "labo", dsn=False) as peer:
        configure(home, server={"workers": 1}, outbound={
            "routes": {LAB: peer.route}, "lease": "2s", "retry_schedule": ["1s"], "retry_interval": "1s"})
        peer.stall_data(30.0)  # longer than any scheduling delay: the operator is killed while it waits
        with serve_process(home, manifest) as process:
            _submit(home, manifest, "Interrompu")
            peer.wait_for(1, timeout=60)  # the peer has the message; its answer is stalled
            process.send_signal(signal.SIGKILL)
            process.wait(10)
        with serve_process(home, manifest):
            received = peer.wait_for(2, timeout=60)  # sent again: the operator never learnt of the first
            states = _wait_for_states(home, ["delivered"])
        copies = [email.message_from_bytes(r.content) for r in received]
        assert len(copies) == 2
        assert len({c["Message-ID"] for c in copies}) == 1  # a duplicate, if any, is recognisable
    assert states == ["delivered"]


def _wait_for_states(home: Path, expected: list[str], timeout: float = 60) -> list[str]:
    """The queue's recipient states once they are ``expected`` (or whatever they are at the deadline)."""
    store = Store(load_settings(home).database_url, home / "blobs")
    try:
        deadline = time.monotonic() + timeout
        while (states := [r.status for e in store.queue.entries() for r in e.recipients]) != expected:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        return states
    finally:
        store.close()
