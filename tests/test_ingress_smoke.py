"""The story of the foundation issue: a peer delivers a DKIM-signed lab report, on both engines."""

from __future__ import annotations

from pathlib import Path

from support.harness import DOCTOR, connect, lab_report, make_kit, peer, running_operator, signed


def test_peer_delivers_signed_report_over_mutual_tls(tmp_path: Path, store_url: str) -> None:
    manifest = make_kit(tmp_path, store_url=store_url)
    with running_operator(tmp_path, manifest) as running:
        labo = peer(manifest, "labo")
        raw = signed(tmp_path, labo, lab_report(labo["sender"], [DOCTOR]))
        with connect(running, labo) as client:
            client.mail(labo["sender"])
            client.rcpt(DOCTOR)
            code, reply = client.data(raw)
        assert code == 250, reply
        stored = running.operator.store.list_messages(DOCTOR)
        assert len(stored) == 1
        assert "dkim=pass" in stored[0].authentication_results
        assert labo["dn"].split(",")[0] in stored[0].authentication_results
        body = running.operator.store.read_message(DOCTOR, stored[0].uid)
        assert body.endswith(raw)
        assert body.startswith(b"Received: ")
