"""mes_bridge benchmark: LMTP intake of lab reports (PDF + IHE XDM) into the dossier, then the patient pages.

Runs `mes-bridge serve` on a fresh demo kit (the bridge alone: the operator's role is played by the
benchmark, which speaks LMTP over mutual TLS with the operator's certificate, as the queue does), then:
1. N messages, each with a ~200 KB PDF (incompressible, as real PDFs are) and an IHE_XDM.ZIP holding it,
   to the active patient over C LMTP connections. Every message is parsed, typed by content, its XDM
   read and checked, and its document filed (blob fsync'd, rows and audit chain committed) before the
   250. Prints msgs/s and the bridge's peak RSS.
2. Seeds the patient up to M messages and M documents (through the store), logs in to the web space
   (password, then the one-time code from the notification outbox) and times the inbox, a deep inbox
   page, the documents page (all, and one category), the history and a message: p50 / p99 latency.

    .venv/bin/python benchmarks/bridge.py [--messages 2000] [--connections 4] [--pages 10000] [--requests 200]
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from http.cookies import SimpleCookie
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from process_tree import ServerMemory  # noqa: E402
from support.bridge_kit import LMTPS, lmtp_transaction  # noqa: E402
from support.filing_samples import message as professional_message  # noqa: E402
from support.filing_samples import pdf, xdm, xdm_document  # noqa: E402
from support.harness import make_kit, wait_for_port  # noqa: E402

from mes_bridge.filing.categories import Category  # noqa: E402
from mes_bridge.service import open_store  # noqa: E402
from mes_bridge.settings import load_bridge_settings  # noqa: E402
from mes_bridge.store import MessageMeta, NewAttachment, NewDocument  # noqa: E402
from mssante_base.patients.ins import validate_ins  # noqa: E402
from mssante_base.trust.tls import client_context  # noqa: E402

SENDER = "dr.martin@hopital-demo.mssante.fr"


def lab_message(ins: str, size: int) -> bytes:
    report = pdf("Hemoglobine 13,2 g/dL", filler=os.urandom(size))
    archive = xdm([xdm_document("CR_BIO.pdf", report, title="Bilan sanguin")], ins=ins)
    raw = professional_message([("bilan.pdf", "application/pdf", report), ("IHE_XDM.ZIP", "application/zip", archive)])
    raw = raw.replace(b"dr.martin@hopital.mssante.fr", SENDER.encode())
    return re.sub(rb"(?<!\r)\n", b"\r\n", raw)


def intake(home: Path, manifest: dict, ins: str, count: int, connections: int, size: int) -> float:
    port = manifest["listeners"]["bridge_lmtp"]["port"]
    context = client_context(home / manifest["operator_cert"], home / manifest["operator_key"],
                             home / manifest["trust_ca"])
    context.check_hostname = False
    base = lab_message(ins, size)
    print(f"message size: {len(base) / 1024:.0f} KB (PDF {size / 1024:.0f} KB + XDM)")
    recipient = f"{ins.lower()}@patient.mssante.fr"
    failures: list[str] = []

    def worker(number: int) -> None:
        with LMTPS(port, context) as client:
            for index in range(number, count, connections):
                raw = base.replace(b"<m1@hopital.mssante.fr>", b"<bench-%d@hopital-demo.mssante.fr>" % index)
                _, replies = lmtp_transaction(client, SENDER, [recipient], raw)
                if [code for code, _ in replies] != [250]:
                    failures.append(str(replies))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(connections)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} deliveries failed, e.g. {failures[0]}")
    return elapsed


def seed(home: Path, ins_text: str, target: int) -> None:
    """Top the patient up to ``target`` messages and documents (small ones: the pages are what is timed)."""
    store = open_store(load_bridge_settings(home))
    ins = validate_ins(ins_text)
    try:
        have = store.count_messages(ins.value)
        categories = list(Category)
        for index in range(have, target):
            raw = b"From: %s\r\nSubject: Compte rendu %d\r\nMessage-ID: <seed-%d@x>\r\n\r\nBonjour.\r\n" % (
                SENDER.encode(), index, index)
            meta = MessageMeta(f"<seed-{index}@x>", SENDER, (ins.address,), f"Compte rendu {index}",
                               from_address=SENDER, from_name="Dr Paul Martin", attachments=1)
            doc = NewDocument(b"%PDF-1.4 " + str(index).encode(), "application/pdf", f"Compte rendu {index}",
                              categories[index % len(categories)], author_address=SENDER, attachment_index=0)
            store.deliver(raw, [ins], meta, actor="bench", notify=False,
                          attachments=[NewAttachment(0, "cr.pdf", "application/pdf", 12)], documents={ins.value: [doc]})
    finally:
        store.close()


class Browser:
    """A tiny HTTPS client with a cookie jar, as a browser would use the web space (forms and CSRF)."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict | None = None) -> tuple[int, str, dict]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        text = response.read().decode("utf-8", "replace")
        for value in response.headers.get_all("Set-Cookie") or []:
            cookie = SimpleCookie(value)
            for name, morsel in cookie.items():
                self.cookies[name] = morsel.value
        return response.status, text, dict(response.headers)

    def csrf(self, path: str) -> str:
        _, text, _ = self.request("GET", path)
        return re.search(r'name="csrf" value="([^"]+)"', text).group(1)


def login(home: Path, manifest: dict, patient: dict) -> Browser:
    context = ssl.create_default_context(cafile=str(home / manifest["trust_ca"]))
    context.check_hostname = False
    browser = Browser(manifest["listeners"]["web"]["port"], context)
    status, _, _ = browser.request("POST", "/connexion", {"csrf": browser.csrf("/connexion"), "ins": patient["ins"],
                                                          "mot_de_passe": patient["password"]})
    assert status == 303, status
    store = open_store(load_bridge_settings(home))
    try:
        notice = [n for n in store.notifications(patient["ins"]) if n.kind == "login-code"][-1]
    finally:
        store.close()
    code = re.search(r"\b(\d{6})\b", notice.body).group(1)
    status, _, headers = browser.request("POST", "/connexion/code", {"csrf": browser.csrf("/connexion/code"),
                                                                     "code": code})
    assert status == 303 and headers.get("Location") == "/", (status, headers)
    return browser


def time_pages(browser: Browser, pages: dict[str, str], requests: int) -> None:
    for name, path in pages.items():
        timings = []
        for _ in range(requests):
            started = time.perf_counter()
            status, _, _ = browser.request("GET", path)
            timings.append((time.perf_counter() - started) * 1000)
            assert status == 200, (path, status)
        timings.sort()
        p99 = timings[min(len(timings) - 1, int(len(timings) * 0.99))]
        print(f"  {name:<28} p50 {statistics.median(timings):6.1f} ms   p99 {p99:6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--size", type=int, default=200_000)
    parser.add_argument("--pages", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--intake-workers", type=int, default=2, help="[bridge] intake_workers (0: threads)")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-bridge-")) / "home"
    manifest = make_kit(home, bridge={"intake_workers": args.intake_workers})
    patient = next(p for p in manifest["patients"] if p["state"] == "active")
    log = (home / "bridge.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "mes_bridge", "--log-level", "WARNING", "serve",
                                "--home", str(home)], stdout=log, stderr=subprocess.STDOUT)
    try:
        for name in ("bridge_lmtp", "web"):
            wait_for_port("127.0.0.1", manifest["listeners"][name]["port"], timeout=60)
        memory = ServerMemory(process.pid)
        print(f"1. LMTP intake: {args.messages} lab reports over {args.connections} connections, "
              f"{args.intake_workers} reading processes")
        elapsed = intake(home, manifest, patient["ins"], args.messages, args.connections, args.size)
        print(f"  {args.messages / elapsed:.1f} msgs/s ({elapsed:.1f} s); bridge peak RSS "
              f"{memory.peak / 2**20:.0f} MB")
        started = time.perf_counter()
        seed(home, patient["ins"], args.pages)
        print(f"2. Patient pages with {args.pages} messages and {args.pages} documents "
              f"(seeded in {time.perf_counter() - started:.0f} s), {args.requests} requests each")
        browser = login(home, manifest, patient)
        _, inbox, _ = browser.request("GET", "/")
        message = re.search(r'href="/messages/(\d+)"', inbox).group(1)
        time_pages(browser, {
            "inbox (page 1)": "/", "inbox (page 100)": "/?page=100", "documents (all)": "/documents",
            "documents (Biologie)": "/documents?categorie=BIOLOGIE", "history": "/historique",
            "conversations": "/conversations", "message": f"/messages/{message}",
        }, args.requests)
    finally:
        process.terminate()
        process.wait(30)
        log.close()


if __name__ == "__main__":
    main()
