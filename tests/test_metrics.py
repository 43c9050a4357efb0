"""[metrics]: Prometheus text at /metrics, summed over the worker processes and mes_bridge, moved by real traffic."""

from __future__ import annotations

import imaplib
import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.harness import (
    DOCTOR,
    client_tls,
    connect_process,
    kit_store,
    lab_report,
    make_kit,
    peer,
    serve_process,
    signed,
)

from mssante_operator.config import load_settings

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"
UNKNOWN = "personne@hopital-demo.mssante.fr"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any], int]]:
    """The demo kit served as in production: a supervisor (its pid), two workers and mes_bridge."""
    home = tmp_path_factory.mktemp("metrics") / "home"
    manifest = make_kit(home, server={"workers": 2})
    with serve_process(home, manifest) as supervisor:
        yield home, manifest, supervisor.pid


def scrape(manifest: dict[str, Any]) -> Samples:
    """GET /metrics, parsed by prometheus_client's own parser (a format error raises)."""
    listener = manifest["listeners"]["metrics"]
    with urllib.request.urlopen(f"http://{listener['host']}:{listener['port']}/metrics", timeout=30) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples that carry ``labels``."""
    wanted = set(labels.items())
    return sum(value for (sample, have), value in samples.items() if sample == name and wanted <= have)


def wait_until(manifest: dict[str, Any], done: Callable[[Samples], bool], timeout: float = 60.0) -> Samples:
    """Scrape until ``done`` holds (deliveries are recorded after the peer's reply): an event, not a delay."""
    deadline = time.monotonic() + timeout
    while not done(samples := scrape(manifest)):
        if time.monotonic() > deadline:
            raise AssertionError(f"the metrics never got there: {sorted(k for k in samples if k[0].startswith('mss'))}")
        time.sleep(0.1)
    return samples


def test_counters_move_with_real_traffic_summed_over_the_processes(served):
    """Whichever worker answers the scrape, it counts for all: the bridge's counters come from a process that
    never serves /metrics, the accepted message from either worker."""
    home, manifest, _ = served
    before = scrape(manifest)
    labo = peer(manifest, "labo")
    with connect_process(home, manifest, labo) as client:  # a peer: one accepted, one refused recipient
        assert client.mail(labo["sender"])[0] == 250
        assert client.rcpt(UNKNOWN)[0] == 550
        assert client.rcpt(DOCTOR)[0] == 250
        assert client.data(signed(home, labo, lab_report(labo["sender"], [DOCTOR])))[0] == 250
    story = subprocess.run([sys.executable, "-m", "mssante_operator.cli", "demo", "patient", "--home", str(home)],
                           capture_output=True, text=True, timeout=120)  # submission, the queue, the bridge
    assert story.returncode == 0, story.stdout + story.stderr

    def moved(after: Samples) -> bool:
        return (total(after, "mssante_deliveries_total", outcome="delivered")
                >= total(before, "mssante_deliveries_total", outcome="delivered") + 3)

    after = wait_until(manifest, moved)
    assert total(after, "mssante_smtp_messages_accepted_total", listener="mta") == \
        total(before, "mssante_smtp_messages_accepted_total", listener="mta") + 1
    assert total(after, "mssante_smtp_messages_accepted_total", listener="submissions") >= \
        total(before, "mssante_smtp_messages_accepted_total", listener="submissions") + 3  # the doctor's three
    assert total(after, "mssante_smtp_refusals_total", listener="mta", stage="rcpt", check="local_mailbox") == \
        total(before, "mssante_smtp_refusals_total", listener="mta", stage="rcpt", check="local_mailbox") + 1
    # The patient's answer after the doctor's FIN is refused on the submission listener, by its check.
    refused = {dict(labels)["check"] for (name, labels), value in after.items()
               if name == "mssante_smtp_refusals_total" and dict(labels)["listener"] == "submissions"
               and value > before.get((name, labels), 0)}
    assert refused == {"patient_reply"}
    taken, registry = "mssante_bridge_messages_taken_total", "mssante_registry_request_seconds_count"
    assert total(after, taken) >= total(before, taken) + 3
    assert total(after, registry) > total(before, registry)
    assert total(after, "mssante_annuaire_request_seconds_count", operation="lookup") > \
        total(before, "mssante_annuaire_request_seconds_count", operation="lookup")


def test_state_read_at_scrape_time(served):
    """The queue by state, and the ages of the certificate, the CRLs and the liste blanche."""
    home, manifest, _ = served
    samples = scrape(manifest)
    assert total(samples, "mssante_certificate_expiry_seconds") > 0
    assert total(samples, "mssante_liste_blanche_age_seconds") >= 0
    crl_files = {path.name for path in load_settings(home).trust_space.crl_files}
    assert crl_files and {dict(labels)["file"] for (name, labels) in samples
                          if name == "mssante_crl_age_seconds"} == crl_files
    assert total(samples, "mssante_queue_oldest_age_seconds") >= 0
    states = {dict(labels)["state"] for (name, labels) in samples if name == "mssante_queue_recipients"}
    assert states <= {"scheduled", "deferred", "delivered", "failed"}


def test_imap_sessions_and_idle_gauges_follow_a_connected_client(served):
    home, manifest, _ = served
    imaps = manifest["listeners"]["imaps"]
    doctor = next(m for m in manifest["mailboxes"] if m["address"] == DOCTOR)
    before = total(scrape(manifest), "mssante_imap_sessions")
    client = imaplib.IMAP4_SSL(imaps["host"], imaps["port"], ssl_context=client_tls(home, manifest, None, None))
    try:
        client.login(DOCTOR, doctor["password"])
        wait_until(manifest, lambda s: total(s, "mssante_imap_sessions") == before + 1)
        client.select("INBOX")
        idle_before = total(scrape(manifest), "mssante_imap_idle_clients")
        client.send(b"i1 IDLE\r\n")
        assert client.readline().startswith(b"+")
        wait_until(manifest, lambda s: total(s, "mssante_imap_idle_clients") == idle_before + 1)
        client.send(b"DONE\r\n")
        while not client.readline().startswith(b"i1 OK"):
            pass
        wait_until(manifest, lambda s: total(s, "mssante_imap_idle_clients") == idle_before)
    finally:
        client.logout()
    wait_until(manifest, lambda s: total(s, "mssante_imap_sessions") == before)


def test_a_failed_login_is_counted_by_protocol_and_mechanism(served):
    home, manifest, _ = served
    imaps = manifest["listeners"]["imaps"]
    before = total(scrape(manifest), "mssante_login_failures_total", protocol="imap", mechanism="LOGIN")
    client = imaplib.IMAP4_SSL(imaps["host"], imaps["port"], ssl_context=client_tls(home, manifest, None, None))
    try:
        with pytest.raises(imaplib.IMAP4.error):
            client.login(DOCTOR, "not the password")
    finally:
        client.logout()
    wait_until(manifest, lambda s: total(s, "mssante_login_failures_total", protocol="imap", mechanism="LOGIN")
               == before + 1)


def test_anything_but_get_metrics_is_not_found(served):
    _, manifest, _ = served
    listener = manifest["listeners"]["metrics"]
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(f"http://{listener['host']}:{listener['port']}/", timeout=30)
    assert raised.value.code == 404


def _series_names(home: Path) -> set[str]:
    """Every series name the operator and the bridge can export (counters' _total, histograms' _bucket...)."""
    from prometheus_client import REGISTRY

    import mes_bridge.lmtp  # noqa: F401 - registers the bridge's counters in this process
    from mssante_operator.metrics import StateCollector

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    with kit_store(home) as store:
        families = [*REGISTRY.collect(), *StateCollector(load_settings(home), store).collect()]
    return {family.name + suffix for family in families if family.name.startswith("mssante_")
            for suffix in suffixes[family.type]}


def test_the_grafana_dashboard_uses_only_exported_series(tmp_path):
    make_kit(tmp_path)
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert exprs
    known = _series_names(tmp_path)
    for expr in exprs:
        used = set(re.findall(r"\bmssante_\w+", expr))
        assert used and used <= known, (expr, used - known)


def test_a_killed_workers_sessions_stop_counting(served):
    """The supervisor marks a dead worker's files (mark_process_dead): its open sessions leave the live sum."""
    home, manifest, supervisor = served
    imaps = manifest["listeners"]["imaps"]
    doctor = next(m for m in manifest["mailboxes"] if m["address"] == DOCTOR)
    before = total(scrape(manifest), "mssante_imap_sessions")
    client = imaplib.IMAP4_SSL(imaps["host"], imaps["port"], ssl_context=client_tls(home, manifest, None, None))
    client.login(DOCTOR, doctor["password"])
    wait_until(manifest, lambda s: total(s, "mssante_imap_sessions") == before + 1)
    local_port = client.sock.getsockname()[1]
    holder = next(child for child in psutil.Process(supervisor).children()
                  if any(c.raddr and c.raddr.port == local_port for c in child.net_connections("tcp")))
    holder.kill()
    holder.wait(30)
    client.shutdown()
    wait_until(manifest, lambda s: total(s, "mssante_imap_sessions") == before)


def test_one_process_without_a_supervisor_serves_its_own_figures(running):
    """No supervisor (the in-process harness, or `serve` with one worker and no bridge): the process's registry."""
    labo = peer(running.manifest, "labo")
    before = scrape(running.manifest)
    with connect_process(running.home, running.manifest, labo) as client:
        assert client.mail(labo["sender"])[0] == 250
        assert client.rcpt(DOCTOR)[0] == 250
        assert client.data(signed(running.home, labo, lab_report(labo["sender"], [DOCTOR])))[0] == 250
    after = scrape(running.manifest)
    name = "mssante_smtp_messages_accepted_total"
    assert total(after, name, listener="mta") == total(before, name, listener="mta") + 1
    assert total(after, "mssante_certificate_expiry_seconds") > 0
