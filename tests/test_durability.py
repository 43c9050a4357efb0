"""Durability: every message acknowledged with 250 survives a SIGKILL of the server, whole.

A real `serve` process takes a load from several peer sessions and is killed at a random moment.
The store is then opened directly: each acknowledged Message-ID must be there with its exact bytes,
and nothing else may be visible but complete messages (a message whose 250 was lost in the kill may
be stored; a partial one never).
"""

from __future__ import annotations

import random
import signal
import smtplib
import threading
import time
from pathlib import Path

from support.harness import (
    DOCTOR,
    connect_process,
    lab_report,
    make_kit,
    peer,
    serve_process,
    signed,
)

from mssante_operator.config import load_settings
from mssante_operator.store.facade import Store

SESSIONS = 4


def _sender(home: Path, manifest: dict, worker: int, stop: threading.Event,
            sent: dict[str, bytes], acked: list[str]) -> None:
    labo = peer(manifest, "labo")
    try:
        client = connect_process(home, manifest, labo)
        for n in range(10_000):
            if stop.is_set():
                return
            message_id = f"<w{worker}.n{n}@labo-biolab.mssante.fr>"
            raw = signed(home, labo, lab_report(labo["sender"], [DOCTOR], size=20_000, message_id=message_id))
            sent[message_id] = raw
            client.sendmail(labo["sender"], [DOCTOR], raw)
            acked.append(message_id)
    except (smtplib.SMTPException, OSError):
        return  # the server died under us: whatever was not acknowledged may or may not be stored


def test_acknowledged_messages_survive_sigkill(tmp_path: Path, store_url: str) -> None:
    manifest = make_kit(tmp_path, store_url=store_url)
    sent: dict[str, bytes] = {}
    acked: list[str] = []
    stop = threading.Event()
    with serve_process(tmp_path, manifest) as process:
        workers = [threading.Thread(target=_sender, args=(tmp_path, manifest, i, stop, sent, acked))
                   for i in range(SESSIONS)]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 30
        while len(acked) < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(random.uniform(0.0, 0.3))
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        stop.set()
        for worker in workers:
            worker.join(30)
    assert len(acked) >= 40, "the load did not get going"

    settings = load_settings(tmp_path)
    store = Store(settings.database_url, settings.path(settings.storage.blob_dir))
    try:
        stored = {m.message_id: m for m in store.list_messages(DOCTOR)}
        missing = [mid for mid in acked if mid not in stored]
        assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {missing[:3]}"
        for message_id, row in stored.items():
            body = store.read_message(DOCTOR, row.uid)
            assert message_id in sent
            assert body.endswith(sent[message_id]), f"{message_id} is not stored whole"
            assert len(body) == row.size
        assert len(stored) == len({m.uid for m in stored.values()})
    finally:
        store.close()

    # The operator starts again on the same store after the crash.
    with serve_process(tmp_path, manifest) as process:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
